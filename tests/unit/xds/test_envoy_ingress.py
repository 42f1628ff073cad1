"""An ingress gateway's Envoy configuration (docs/ingress.md, "Data path (contract)"): the Listener
`gateway/{N}/{G}` with a chain per listener (SNI, TLS by SDS, client certificates), RBAC from a
policy targeting the Gateway, virtual hosts per hostname from attached routes (allowedRoutes,
ReferenceGrants), the ingress-use-waypoint cluster, SDS Secrets, who may read them, incremental
updates, and the Secret cache that fetches their data."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest
from envoy.config.rbac.v3 import rbac_pb2 as rbac
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from services.xds.generators.envoy import EnvoyTranslator
from services.xds.generators.envoy.sds import SecretData, secret_data
from services.xds.model import SECRETS, Change, Key
from services.xds.peers import Peer
from services.xds.secrets import SecretCache, SecretFetchError
from services.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from services.xds.visibility import WaypointAccess
from tests.unit.xds import objects as o

pytestmark = pytest.mark.unit

NS = "shop"
LISTENER_NAME = f"gateway/{NS}/edge"
HTTPS_ROUTES = f"gateway|{NS}|edge|443"
HTTP_ROUTES = f"gateway|{NS}|edge|80"
WEB = "web.shop.svc.cluster.local"
CART = "cart.store.svc.cluster.local"
CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIcert\n-----END CERTIFICATE-----\n"
KEY_PEM = b"-----BEGIN PRIVATE KEY-----\nMIIkey-material\n-----END PRIVATE KEY-----\n"
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIca\n-----END CERTIFICATE-----\n"
GATEWAY_REF = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}
GATEWAY_ID = Peer("workload", identity=f"spiffe://cluster.local/ns/{NS}/sa/edge-istio")


def edge(**tls_extra: Any) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": NS, "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {
                    "name": "https",
                    "port": 443,
                    "protocol": "HTTPS",
                    "hostname": "web.example.test",
                    "tls": {"certificateRefs": [{"name": "web-cert"}], **tls_extra},
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                },
            ],
        },
    }


def http_route(name: str, ns: str, backend: dict, hosts: list[str] | None = None, **match: Any) -> dict:
    spec: dict = {
        "parentRefs": [{"name": "edge", "namespace": NS}],
        "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": match.get("prefix", "/")}}], "backendRefs": [backend]}
        ],
    }
    if hosts:
        spec["hostnames"] = hosts
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2024-01-02T00:00:00Z"},
        "spec": spec,
    }


def grant(ns: str, from_kind: str, from_ns: str, to_kind: str) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": f"allow-{from_kind.lower()}", "namespace": ns},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": from_kind, "namespace": from_ns}],
            "to": [{"group": "", "kind": to_kind}],
        },
    }


def tls_data(version: str = "1", **extra: bytes) -> SecretData:
    return SecretData(version, "kubernetes.io/tls", cert_chain=CERT_PEM, private_key=KEY_PEM, **extra)


def base() -> list[dict]:
    return [
        o.namespace(NS),
        o.namespace("store"),
        o.service(
            "web", ns=NS, selector={"app": "web"}, ports=[{"name": "http", "port": 8080}], cluster_ip="198.19.0.20"
        ),
        o.pod("web-1", ns=NS, ip="198.18.2.1", labels={"app": "web"}),
        o.service(
            "cart",
            ns="store",
            selector={"app": "cart"},
            ports=[{"name": "http", "port": 9090}],
            cluster_ip="198.19.0.21",
        ),
        o.pod("cart-1", ns="store", ip="198.18.2.2", labels={"app": "cart"}),
    ]


def translated(*extra: dict, secrets: dict | None = None) -> tuple[o.Cluster, EnvoyTranslator, dict]:
    held = {(NS, "web-cert"): tls_data()} if secrets is None else secrets
    cluster = o.Cluster(*base(), edge(), *extra)
    translator = EnvoyTranslator(secrets=lambda ns, name: held.get((ns, name)))
    translator.rebuild(cluster.store)
    return cluster, translator, held


def chains(translator: EnvoyTranslator) -> dict[str, Any]:
    return {c.name: c for c in translator.resources(LISTENER)[LISTENER_NAME].filter_chains}


def manager(chain: Any) -> hcm.HttpConnectionManager:
    out = hcm.HttpConnectionManager()
    assert chain.filters[0].typed_config.Unpack(out)
    return out


def vhosts(translator: EnvoyTranslator, name: str = HTTPS_ROUTES) -> dict[str, Any]:
    return {v.name: v for v in translator.resources(ROUTE)[name].virtual_hosts}


def test_an_https_listener_gets_sni_tls_by_sds_and_its_secret() -> None:
    _, translator, _ = translated(http_route("web", NS, {"name": "web", "port": 8080}, ["web.example.test"]))
    https, http = chains(translator)["https"], chains(translator)["http"]
    assert https.filter_chain_match.destination_port.value == 443
    assert list(https.filter_chain_match.server_names) == ["web.example.test"]
    assert https.transport_socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.DownstreamTlsContext()
    assert https.transport_socket.typed_config.Unpack(context)
    assert [c.name for c in context.common_tls_context.tls_certificate_sds_secret_configs] == [
        f"kubernetes://{NS}/web-cert"
    ]
    assert context.common_tls_context.tls_certificate_sds_secret_configs[0].sds_config.HasField("ads")
    assert list(context.common_tls_context.alpn_protocols) == ["h2", "http/1.1"]
    assert not context.require_client_certificate.value
    assert manager(https).rds.route_config_name == HTTPS_ROUTES
    assert [f.name for f in manager(https).http_filters] == ["envoy.filters.http.fault", "envoy.filters.http.router"]
    # Plain HTTP: port only, no TLS.
    assert http.filter_chain_match.destination_port.value == 80 and not http.filter_chain_match.server_names
    assert not http.HasField("transport_socket") and manager(http).rds.route_config_name == HTTP_ROUTES
    # SDS: the pair, inline.
    secret = translator.resources(SECRET)[f"kubernetes://{NS}/web-cert"]
    assert secret.tls_certificate.certificate_chain.inline_bytes == CERT_PEM
    assert secret.tls_certificate.private_key.inline_bytes == KEY_PEM
    # One virtual host for the route's hostname, with and without the port; no catch-all.
    (vhost,) = vhosts(translator).values()
    assert list(vhost.domains) == ["web.example.test", "web.example.test:443"]
    assert vhost.routes[0].route.cluster == f"inbound-vip|8080||{WEB}"
    assert f"inbound-vip|8080||{WEB}" in translator.resources(CLUSTER)
    endpoints = translator.resources(ENDPOINT)[f"inbound-vip|8080||{WEB}"]
    assert endpoints.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == "198.18.2.1"


def test_without_secret_data_the_listener_has_no_chain_until_it_arrives() -> None:
    cluster, translator, held = translated(secrets={})
    assert set(chains(translator)) == {"http"}
    assert not translator.resources(SECRET)
    assert translator.secrets_read() == {(NS, "web-cert")}
    held[(NS, "web-cert")] = tls_data()
    deltas = translator.secrets_changed(cluster.store, {(NS, "web-cert")})
    assert set(deltas.secrets.updated) == {f"kubernetes://{NS}/web-cert"}
    assert set(chains(translator)) == {"http", "https"}
    # An Opaque Secret is not a certificate.
    held[(NS, "web-cert")] = SecretData("2", "Opaque", cert_chain=CERT_PEM, private_key=KEY_PEM)
    deltas = translator.secrets_changed(cluster.store, {(NS, "web-cert")})
    assert deltas.secrets.removed == {f"kubernetes://{NS}/web-cert"} and set(chains(translator)) == {"http"}


def test_client_certificates_are_required_with_the_cacert_secret() -> None:
    cluster = o.Cluster(*base(), edge(options={"gateway.istio.io/tls-client-ca": "clients"}))
    held = {(NS, "web-cert"): tls_data(), (NS, "clients-cacert"): SecretData("3", "Opaque", cacert=CA_PEM)}
    translator = EnvoyTranslator(secrets=lambda ns, name: held.get((ns, name)))
    translator.rebuild(cluster.store)
    context = tls_pb2.DownstreamTlsContext()
    assert chains(translator)["https"].transport_socket.typed_config.Unpack(context)
    assert context.require_client_certificate.value
    assert context.common_tls_context.validation_context_sds_secret_config.name == f"kubernetes://{NS}/clients-cacert"
    ca = translator.resources(SECRET)[f"kubernetes://{NS}/clients-cacert"]
    assert ca.validation_context.trusted_ca.inline_bytes == CA_PEM
    # `ca.crt` in the Secret itself wins over the -cacert Secret.
    held[(NS, "clients")] = SecretData("4", "Opaque", ca_crt=b"own CA")
    translator.secrets_changed(cluster.store, {(NS, "clients")})
    assert (
        translator.resources(SECRET)[f"kubernetes://{NS}/clients-cacert"].validation_context.trusted_ca.inline_bytes
        == b"own CA"
    )


def test_a_route_of_another_namespace_attaches_where_allowed_and_its_backend_needs_a_grant() -> None:
    route = http_route("cart", "store", {"name": "cart", "port": 9090}, ["shop.example.test"])
    _, translator, _ = translated(route)
    # allowedRoutes All on https (hostname web.example.test does not intersect shop.example.test),
    # Same on http: the route attaches nowhere.
    assert not vhosts(translator, HTTP_ROUTES) and not vhosts(translator)
    wide = http_route("cart", "store", {"name": "cart", "namespace": "store", "port": 9090}, ["web.example.test"])
    _, translator, _ = translated(wide)
    (vhost,) = vhosts(translator).values()
    assert vhost.routes[0].route.cluster == f"inbound-vip|9090||{CART}"  # same namespace as its backend
    # A backend in a third namespace: unusable (the rule answers 500) until a ReferenceGrant allows it.
    cross = http_route("cart", NS, {"name": "cart", "namespace": "store", "port": 9090}, ["web.example.test"])
    cluster, translator, _ = translated(cross)
    (vhost,) = vhosts(translator).values()
    assert vhost.routes[0].direct_response.status == 500
    change = cluster.apply(grant("store", "HTTPRoute", NS, "Service"))
    deltas = translator.update(cluster.store, [change])
    assert HTTPS_ROUTES in deltas.routes.updated
    (vhost,) = vhosts(translator).values()
    assert vhost.routes[0].route.cluster == f"inbound-vip|9090||{CART}"
    assert f"inbound-vip|9090||{CART}" in translator.resources(CLUSTER)


def test_a_certificate_in_another_namespace_needs_a_grant() -> None:
    gateway = edge()
    gateway["spec"]["listeners"][1]["tls"]["certificateRefs"] = [{"name": "shared", "namespace": "store"}]
    asked: list[tuple[str, str]] = []

    def resolve(ns: str, name: str) -> SecretData | None:
        asked.append((ns, name))
        return tls_data()

    cluster = o.Cluster(*base(), gateway)
    translator = EnvoyTranslator(secrets=resolve)
    translator.rebuild(cluster.store)
    assert set(chains(translator)) == {"http"} and asked == []  # never even fetched
    translator.update(cluster.store, [cluster.apply(grant("store", "Gateway", NS, "Secret"))])
    assert set(chains(translator)) == {"http", "https"} and asked == [("store", "shared")]


def test_a_policy_targeting_the_gateway_becomes_its_rbac_filter() -> None:
    policy = o.authorization_policy(
        "only-get",
        ns=NS,
        targetRefs=[GATEWAY_REF],
        action="ALLOW",
        rules=[{"to": [{"operation": {"methods": ["GET"]}}]}],
    )
    elsewhere = o.authorization_policy("other", ns="store", targetRefs=[GATEWAY_REF], rules=[{}])
    _, translator, _ = translated(policy, elsewhere)
    for chain in chains(translator).values():
        filters = manager(chain).http_filters
        assert [f.name for f in filters] == [
            "envoy.filters.http.rbac",
            "envoy.filters.http.fault",
            "envoy.filters.http.router",
        ]
        config = rbac_filter.RBAC()
        assert filters[0].typed_config.Unpack(config)
        assert config.rules.action == rbac.RBAC.ALLOW and set(config.rules.policies) == {f"{NS}.only-get"}


def test_a_service_asking_for_its_waypoint_at_ingress_is_sent_there_over_hbone() -> None:
    waypoint = o.gateway("waypoint", ns=NS, address="198.19.0.99")
    waypoint_pods = [
        o.pod(
            f"waypoint-{i}",
            ns=NS,
            ip=f"198.18.9.{i + 1}",
            labels={"gateway.networking.k8s.io/gateway-name": "waypoint"},
            service_account="waypoint",
        )
        for i in range(2)
    ]
    labels = {"istio.io/use-waypoint": "waypoint", "istio.io/ingress-use-waypoint": "true"}
    web = o.service(
        "web",
        ns=NS,
        selector={"app": "web"},
        ports=[{"name": "http", "port": 8080}],
        cluster_ip="198.19.0.20",
        labels=labels,
    )
    route = http_route("web", NS, {"name": "web", "port": 8080}, ["web.example.test"])
    cluster, translator, _ = translated(waypoint, *waypoint_pods, web, route)
    name = f"inbound-vip|8080|waypoint|{WEB}"
    assert vhosts(translator)["web.example.test:443"].routes[0].route.cluster == name
    assert name in translator.resources(CLUSTER)
    endpoints = translator.resources(ENDPOINT)[name].endpoints[0].lb_endpoints
    assert [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value) for e in endpoints
    ] == [("198.19.0.20", 8080)] * 2
    metadata = [json_format.MessageToDict(e.metadata.filter_metadata["istio"]) for e in endpoints]
    assert metadata == [
        {
            "tunnel": "hbone",
            "identity": f"spiffe://cluster.local/ns/{NS}/sa/waypoint",
            "hbone_address": f"198.18.9.{i + 1}:15008",
        }
        for i in range(2)
    ]
    # A waypoint pod going away is followed.
    deltas = translator.update(cluster.store, [cluster.delete(waypoint_pods[1])])
    assert name in deltas.endpoints.updated
    assert len(translator.resources(ENDPOINT)[name].endpoints[0].lb_endpoints) == 1


def test_a_route_change_updates_the_routes_only() -> None:
    route = http_route("web", NS, {"name": "web", "port": 8080}, ["web.example.test"])
    cluster, translator, _ = translated(route)
    changed = http_route("web", NS, {"name": "web", "port": 8080}, ["web.example.test"], prefix="/api")
    deltas = translator.update(cluster.store, [cluster.apply(changed)])
    assert set(deltas.routes.updated) == {HTTPS_ROUTES, HTTP_ROUTES}  # attached to both listeners
    assert not deltas.listeners.updated and not deltas.secrets.updated and not deltas.clusters.updated
    routes = vhosts(translator)["web.example.test:443"].routes
    assert [r.match.path or r.match.prefix for r in routes] == ["/api", "/api/"]  # PathPrefix: by segment
    deltas = translator.update(cluster.store, [cluster.delete(changed)])
    assert set(deltas.routes.updated) == {HTTPS_ROUTES, HTTP_ROUTES} and not vhosts(translator)


def test_only_the_gateway_service_account_reads_its_listener_and_secrets() -> None:
    _, translator, _ = translated()
    access = WaypointAccess(translator.readers)
    sleep = Peer("workload", identity=f"spiffe://cluster.local/ns/{NS}/sa/sleep")
    other_ns = Peer("workload", identity="spiffe://cluster.local/ns/store/sa/edge-istio")
    for type_url, name in ((LISTENER, LISTENER_NAME), (SECRET, f"kubernetes://{NS}/web-cert"), (ROUTE, HTTPS_ROUTES)):
        assert access.visibility(GATEWAY_ID, type_url)(name), name
        assert not access.visibility(sleep, type_url)(name)
        assert not access.visibility(other_ns, type_url)(name)
        assert not access.visibility(Peer("ztunnel", node="node-1"), type_url)(name)
    # A Secret nobody references is nobody's.
    assert not access.visibility(GATEWAY_ID, SECRET)(f"kubernetes://{NS}/other")


# --- the Secret cache -------------------------------------------------------------------------


def secret_object(version: str, key: bytes = KEY_PEM) -> dict:
    data = {"tls.crt": base64.b64encode(CERT_PEM).decode(), "tls.key": base64.b64encode(key).decode()}
    return {
        "metadata": {"name": "web-cert", "namespace": NS, "resourceVersion": version},
        "type": "kubernetes.io/tls",
        "data": data,
    }


def test_secret_data_keeps_its_values_out_of_its_repr() -> None:
    data = secret_data(secret_object("7"))
    assert data.is_tls and data.private_key == KEY_PEM and data.resource_version == "7"
    assert "MIIkey" not in repr(data)


def test_the_cache_fetches_on_demand_refetches_on_a_new_version_and_logs_names_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stored = {"object": secret_object("1")}
    fetched: list[tuple[str, str]] = []
    failing = {"now": False}
    reported: list[set] = []

    async def fetch(ns: str, name: str) -> dict | None:
        # The istiod boundary (tested in tests/integration/test_xds_ingress.py).
        fetched.append((ns, name))
        if failing["now"]:
            raise SecretFetchError("HTTP 403")
        return stored["object"] if name == "web-cert" else None

    cache = SecretCache(reported.append, fetch)

    async def scenario() -> None:
        assert cache.get(NS, "web-cert") is None  # queued
        assert await cache.refresh_due() == {(NS, "web-cert")}
        assert cache.get(NS, "web-cert").private_key == KEY_PEM  # type: ignore[union-attr]
        assert await cache.refresh_due() == set()  # not due again
        cache.note(NS, "web-cert", "1")  # the same version: nothing to do
        assert await cache.refresh_due() == set() and len(fetched) == 1
        stored["object"] = secret_object("2", key=b"new key")
        cache.note(NS, "web-cert", "2")
        assert await cache.refresh_due() == {(NS, "web-cert")}
        assert cache.get(NS, "web-cert").private_key == b"new key"  # type: ignore[union-attr]
        # A new version that cannot be fetched: the stale data goes, the name is logged.
        failing["now"] = True
        cache.note(NS, "web-cert", "3")
        with caplog.at_level(logging.WARNING, logger="mesh-xds.secrets"):
            assert await cache.refresh_due() == {(NS, "web-cert")}
        assert cache.get(NS, "web-cert") is None
        # Deleted: reported at once.
        failing["now"] = False
        assert await cache.refresh_due() == set()  # retried later, not now
        cache.note(NS, "web-cert", None)
        cache.retain(set())
        assert cache.get(NS, "web-cert") is None

    asyncio.run(scenario())
    (record,) = [r for r in caplog.records if r.name == "mesh-xds.secrets"]
    assert record.secret == f"{NS}/web-cert" and record.error == "HTTP 403"  # type: ignore[attr-defined]
    assert "key" not in record.getMessage()


def test_the_cache_follows_secret_references_from_the_stream() -> None:
    cache = SecretCache(lambda _keys: None, None)
    assert cache.get(NS, "web-cert") is None  # without a fetcher nothing is queued
    reported: list[set] = []
    cache = SecretCache(reported.append, lambda ns, name: asyncio.sleep(0, result=secret_object("1")))
    cache.get(NS, "web-cert")
    asyncio.run(cache.refresh_due())
    reference = {"metadata": {"name": "web-cert", "namespace": NS, "resourceVersion": "1"}, "type": "kubernetes.io/tls"}
    cache.note_changes([Change(Key(SECRETS, NS, "web-cert"), reference, None)])
    assert reported == [{(NS, "web-cert")}] and cache.get(NS, "web-cert") is None
