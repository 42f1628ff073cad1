"""An ingress gateway's whole configuration (docs/ingress.md, "Data path (contract)"): the Listener
`gateway/{N}/{G}`, its RouteConfigurations (gateway_vhosts.py), the Clusters and endpoints its routes
use (gateway_clusters.py), and the SDS Secrets its TLS chains name (sds.py).

One filter chain per Gateway listener that is Accepted (protocol HTTP or HTTPS) and whose
references resolve: `filter_chain_match.destination_port` = the listener port and, for HTTPS,
`server_names` = [hostname] when it has one, plus a DownstreamTlsContext naming its certificates by
SDS (`kubernetes://{ns}/{name}`, ALPN h2 and http/1.1) and, when the listener asks for client
certificates (`tls.options["gateway.istio.io/tls-client-ca"]` or `tls.frontendValidation`),
`require_client_certificate` and the validation context `kubernetes://{ns}/{name}-cacert`. A
certificate resolves when it is a core Secret, in the Gateway's namespace or allowed by a
ReferenceGrant there, and its data (fetched by mesh-xds) is a `kubernetes.io/tls` pair; Secrets
a Gateway may not reference are never even asked for. Listeners with unsupported route kinds, TLS
modes other than Terminate, or unresolved references get no chain, as their status says.

The chain's HttpConnectionManager takes `gateway|{N}|{G}|{port}` from RDS and runs a waypoint's
filters (jwt_authn, RBAC DENY, RBAC ALLOW, fault, router) from the RequestAuthentications and
AuthorizationPolicies whose `targetRefs` name the Gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf.message import Message

from mesh.gateway_refs import (
    GATEWAY_GROUP,
    ObjectKey,
    certificate_refs,
    client_ca_refs,
    reference_permitted,
    supported_kinds,
)
from mesh.xds.envoy_routes import route_clusters
from services.xds.generators.authorization import target_refs
from services.xds.generators.view import meta
from services.xds.model import AUTHORIZATION_POLICIES, REFERENCE_GRANTS, REQUEST_AUTHENTICATIONS, Key

from .gateway_clusters import IngressLookup, gateway_clusters
from .gateway_vhosts import http_listeners, route_configurations
from .http_manager import manager_filter
from .resources import gateway_listener_name, gateway_route_name, pack, sds_name
from .sds import CACERT_SUFFIX, SecretResolver, client_ca, tls_certificate_secret, validation_secret
from .waypoint_jwt import JwksResolver, jwt_filter
from .waypoint_listeners import SERVICE_ACCOUNT
from .waypoint_rbac import rbac_filters

Json = dict[str, Any]

INGRESS_CLASS = "istio"
TLS_SOCKET = "envoy.transport_sockets.tls"
ALPN = ("h2", "http/1.1")


def is_ingress(gateway: Json | None) -> bool:
    """Whether a Gateway is an ingress gateway (class istio)."""
    return bool(gateway) and (gateway.get("spec") or {}).get("gatewayClassName") == INGRESS_CLASS


def ingress_service_account(gateway: Json) -> str:
    """The service account the gateway's pods run as: the annotation, else Istio's `{G}-istio`."""
    annotations = meta(gateway).get("annotations") or {}
    return annotations.get(SERVICE_ACCOUNT) or f"{meta(gateway)['name']}-istio"


@dataclass
class GatewayTranslation:
    """Everything one ingress gateway serves, what its JWT filters read and could not resolve, and
    the Secrets (namespace, name) it asked for."""

    resources: list[Message] = field(default_factory=list)
    uris: set[str] = field(default_factory=set)
    problems: dict[Key, list[str]] = field(default_factory=dict)
    secrets: set[tuple[str, str]] = field(default_factory=set)


def gateway_policies(lookup: IngressLookup, kind: str, namespace: str, name: str) -> list[Json]:
    """The policies of `kind` in the Gateway's namespace whose targetRefs name the Gateway."""
    found = []
    for policy in lookup.view.list(kind, namespace):
        for ref in target_refs(policy.get("spec") or {}):
            if (
                (ref.get("group") or "") == GATEWAY_GROUP
                and ref.get("kind") == "Gateway"
                and ref.get("name") == name
                and (ref.get("namespace") or namespace) == namespace
            ):
                found.append(policy)
                break
    return sorted(found, key=lambda p: meta(p)["name"])


def _filters(lookup: IngressLookup, gateway: Json, resolve: JwksResolver, out: GatewayTranslation) -> list[Any]:
    namespace, name = meta(gateway).get("namespace", ""), meta(gateway)["name"]
    jwt = jwt_filter(gateway_policies(lookup, REQUEST_AUTHENTICATIONS, namespace, name), resolve)
    out.uris |= jwt.uris
    for key, problems in jwt.problems.items():
        out.problems.setdefault(key, [])
        out.problems[key] += [p for p in problems if p not in out.problems[key]]
    policies = gateway_policies(lookup, AUTHORIZATION_POLICIES, namespace, name)
    return ([jwt.filter] if jwt.filter is not None else []) + rbac_filters(policies)


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(
        name=name,
        sds_config=config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
        ),
    )


def _permitted(lookup: IngressLookup, namespace: str, key: ObjectKey) -> bool:
    return reference_permitted(lookup.grants, GATEWAY_GROUP, "Gateway", namespace, "", "Secret", key)


def _tls_context(
    lookup: IngressLookup, gateway: Json, listener: Json, secrets: SecretResolver, out: GatewayTranslation
) -> tuple[tls_pb2.DownstreamTlsContext, list[Message]] | None:
    """The listener's DownstreamTlsContext and the Secrets it names, or None when a reference does
    not resolve (then the listener gets no chain)."""
    namespace = meta(gateway).get("namespace", "")
    tls = listener.get("tls") or {}
    raw_refs = tls.get("certificateRefs") or []
    refs = certificate_refs(listener, namespace)
    not_secrets = [r for r in raw_refs if r.get("group", "") != "" or r.get("kind", "Secret") != "Secret"]
    if (tls.get("mode") or "Terminate") != "Terminate" or not raw_refs or not_secrets:
        return None  # passthrough, no certificate, or a reference to something other than a Secret
    context = tls_pb2.DownstreamTlsContext(common_tls_context=tls_pb2.CommonTlsContext(alpn_protocols=ALPN))
    resources: list[Message] = []
    for key in refs:
        if not _permitted(lookup, namespace, key):
            return None
        out.secrets.add((key.namespace, key.name))
        data = secrets(key.namespace, key.name)
        if data is None or not data.is_tls:
            return None
        resources.append(tls_certificate_secret(key.namespace, key.name, data))
        context.common_tls_context.tls_certificate_sds_secret_configs.append(_sds(sds_name(key.namespace, key.name)))
    cas = client_ca_refs(listener, namespace)
    if cas:
        ca = cas[0]  # Envoy validates against one context; the first reference is it
        if not _permitted(lookup, namespace, ca):
            return None
        companion = ca.name + CACERT_SUFFIX
        out.secrets |= {(ca.namespace, ca.name), (ca.namespace, companion)}
        trusted = client_ca(secrets(ca.namespace, ca.name), secrets(ca.namespace, companion))
        if trusted is None:
            return None
        resources.append(validation_secret(ca.namespace, ca.name, trusted))
        context.require_client_certificate.value = True
        context.common_tls_context.validation_context_sds_secret_config.CopyFrom(
            _sds(sds_name(ca.namespace, companion))
        )
    return context, resources


def _chain(
    gateway: Json, listener: Json, filters: list[Any], tls: tls_pb2.DownstreamTlsContext | None
) -> lc.FilterChain:
    namespace, name = meta(gateway).get("namespace", ""), meta(gateway)["name"]
    port = int(listener.get("port") or 0)
    match = lc.FilterChainMatch()
    match.destination_port.value = port
    if tls is not None and listener.get("hostname"):
        match.server_names.append(str(listener["hostname"]).lower())
    manager = manager_filter(
        f"gateway/{namespace}/{name}/{listener['name']}", gateway_route_name(namespace, name, port), filters
    )
    chain = lc.FilterChain(name=listener["name"], filter_chain_match=match, filters=[manager])
    if tls is not None:
        chain.transport_socket.CopyFrom(base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(tls)))
    return chain


def gateway_translation(
    lookup: IngressLookup, gateway: Json, resolve: JwksResolver, secrets: SecretResolver
) -> GatewayTranslation:
    """The Listener of an ingress gateway and everything its chains use."""
    namespace, name = meta(gateway).get("namespace", ""), meta(gateway)["name"]
    lookup.grants = list(lookup.view.list(REFERENCE_GRANTS))
    out = GatewayTranslation()
    filters = _filters(lookup, gateway, resolve, out)
    chains: list[lc.FilterChain] = []
    sds: dict[str, Message] = {}
    for listener in http_listeners(gateway):
        if supported_kinds(listener)[1]:
            continue  # ResolvedRefs False (InvalidRouteKinds)
        tls = None
        if str(listener.get("protocol")).upper() == "HTTPS":
            found = _tls_context(lookup, gateway, listener, secrets, out)
            if found is None:
                continue
            tls, resources = found
            sds |= {resource.name: resource for resource in resources}  # type: ignore[attr-defined]
        chains.append(_chain(gateway, listener, filters, tls))
    configs = route_configurations(lookup, gateway)
    wanted = {cluster for config in configs for cluster in route_clusters(config)}
    first_port = chains[0].filter_chain_match.destination_port.value if chains else 0
    address = address_pb2.Address(socket_address=address_pb2.SocketAddress(address="0.0.0.0", port_value=first_port))
    listener_message = listener_pb2.Listener(
        name=gateway_listener_name(namespace, name), address=address, filter_chains=chains
    )
    out.resources = [listener_message, *configs, *gateway_clusters(lookup, wanted), *sds.values()]
    return out
