"""A waypoint's whole configuration (docs/waypoint.md, "Configuration from mesh-xds"): its Listener
`waypoint/{N}/{G}` with one filter chain per bound (Service, port), and per chain the
RouteConfiguration `inbound-vip|{port}|http|{host}`, the Clusters `inbound-vip|{port}|{subset}|{host}`
its routes use, and their ClusterLoadAssignments.

A chain is matched by the Service's VIPs (/32 or /128; a ServiceEntry's addresses as written) and
the port; its HttpConnectionManager's codec follows the port's `appProtocol` or name prefix (Istio's
protocol selection: `http` → HTTP1; `http2`, `grpc`, `grpc-web`, `h2c` → HTTP2; else AUTO), and its
filters are jwt_authn (when a RequestAuthentication applies), RBAC DENY and ALLOW (when such
policies apply), fault, router. Policies apply to a chain when their `targetRefs` name the waypoint
Gateway (in its namespace), the chain's Service or ServiceEntry (in its namespace), or, from the
root namespace, the GatewayClass `istio-waypoint`. Pods bound for workload traffic get a chain each
(waypoint_workloads.py), under the policies that target the Gateway or GatewayClass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from mesh.xds.envoy_routes import route_clusters
from services.xds.generators.authorization import target_refs
from services.xds.generators.view import meta
from services.xds.generators.waypoints import WAYPOINT_CLASS
from services.xds.model import AUTHORIZATION_POLICIES, REQUEST_AUTHENTICATIONS, SERVICE_ENTRIES, SERVICES, Key

from .clusters import subsets
from .http_manager import manager_filter
from .listeners import routes_for
from .lookup import Lookup
from .resources import inbound_route_name, waypoint_listener_name
from .targets import Target, TargetPort, service_entry_targets, service_target
from .waypoint_clusters import cluster_resources, target_of, upstream_protocol
from .waypoint_jwt import JwksResolver, jwt_filter
from .waypoint_rbac import rbac_filters
from .waypoint_workloads import POD_ROUTE, bound_pods, chain_name, workload_chain, workload_resources

Json = dict[str, Any]

HBONE_PORT = 15008
SERVICE_ACCOUNT = "gateway.istio.io/service-account"
DEFAULT_SERVICE_ACCOUNT = "waypoint"  # Istio's waypoint service account
_TARGET_KINDS = {SERVICES: ("", "Service"), SERVICE_ENTRIES: ("networking.istio.io", "ServiceEntry")}


def is_waypoint(gateway: Json | None) -> bool:
    """Whether a Gateway is a waypoint (class istio-waypoint)."""
    return bool(gateway) and (gateway.get("spec") or {}).get("gatewayClassName") == WAYPOINT_CLASS


def service_account(gateway: Json) -> str:
    """The service account a waypoint's pods run as (and its certificate names)."""
    return (meta(gateway).get("annotations") or {}).get(SERVICE_ACCOUNT) or DEFAULT_SERVICE_ACCOUNT


@dataclass
class WaypointTranslation:
    """Everything one waypoint serves, plus what its JWT filters read and could not resolve."""

    resources: list[Message] = field(default_factory=list)
    uris: set[str] = field(default_factory=set)
    problems: dict[Key, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Bound:
    """A Service or ServiceEntry bound to the waypoint, with its targets."""

    key: Key
    targets: tuple[Target, ...]


def bound_targets(lookup: Lookup, key: Key, obj: Json) -> Bound:
    """The targets of a bound Service or ServiceEntry (reading their hosts)."""
    if key.kind == SERVICES:
        target = service_target(lookup.view, obj)
        targets: tuple[Target, ...] = (target,) if target is not None else ()
    else:
        targets = tuple(service_entry_targets(lookup.view, obj))
    for target in targets:
        lookup.reads.add(target.host)
    return Bound(key, targets)


def _codec(port: TargetPort) -> int:
    return {
        "http2": hcm.HttpConnectionManager.HTTP2,
        "http1": hcm.HttpConnectionManager.HTTP1,
    }.get(upstream_protocol(port), hcm.HttpConnectionManager.AUTO)


def _prefix(vip: str) -> address_pb2.CidrRange:
    network = ipaddress.ip_network(vip, strict=False)
    return address_pb2.CidrRange(
        address_prefix=str(network.network_address), prefix_len=wrappers_pb2.UInt32Value(value=network.prefixlen)
    )


def _applies(policy: Json, gateway: tuple[str, str], target: Key | None, root: str) -> bool:
    """Whether a targetRefs policy names this waypoint, this chain's Service/ServiceEntry (None for
    a workload chain), or (from the root namespace) the waypoint GatewayClass."""
    namespace = meta(policy).get("namespace", "")
    group, kind = _TARGET_KINDS[target.kind] if target is not None else ("", "")
    target_ref = (target.namespace, target.name) if target is not None else None
    for ref in target_refs(policy.get("spec") or {}):
        if (ref.get("namespace") or namespace) != namespace:
            continue
        ref_group, ref_kind, name = ref.get("group") or "", ref.get("kind"), ref.get("name")
        if ref_kind == "Gateway" and ref_group == "gateway.networking.k8s.io" and (namespace, name) == gateway:
            return True
        if target is not None and (ref_group, ref_kind) == (group, kind) and (namespace, name) == target_ref:
            return True
        if ref_kind == "GatewayClass" and name == WAYPOINT_CLASS and namespace == root:
            return True
    return False


def chain_policies(lookup: Lookup, kind: str, gateway: tuple[str, str], target: Key | None) -> list[Json]:
    """The AuthorizationPolicies or RequestAuthentications (`kind`) that apply to one chain (a
    workload chain's `target` is None)."""
    spaces = dict.fromkeys([gateway[0], *([target.namespace] if target else []), lookup.root_namespace])
    found = [
        p for ns in spaces for p in lookup.view.list(kind, ns) if _applies(p, gateway, target, lookup.root_namespace)
    ]
    return sorted(found, key=lambda p: (meta(p).get("namespace", ""), meta(p)["name"]))


def _filters(
    lookup: Lookup, ref: tuple[str, str], target: Key | None, resolve: JwksResolver, out: WaypointTranslation
) -> list[hcm.HttpFilter]:
    """A chain's jwt_authn and RBAC filters; the JWT rules' URIs and problems are added to `out`."""
    policies = chain_policies(lookup, AUTHORIZATION_POLICIES, ref, target)
    jwt = jwt_filter(chain_policies(lookup, REQUEST_AUTHENTICATIONS, ref, target), resolve)
    out.uris |= jwt.uris
    for key, problems in jwt.problems.items():
        out.problems.setdefault(key, [])
        out.problems[key] += [p for p in problems if p not in out.problems[key]]
    return ([jwt.filter] if jwt.filter is not None else []) + rbac_filters(policies)


def _workload_chains(
    lookup: Lookup, ref: tuple[str, str], resolve: JwksResolver, out: WaypointTranslation
) -> list[lc.FilterChain]:
    """One chain per pod bound for workload traffic (any port), and the shared inbound-pod route
    and original-destination cluster when there is one."""
    pods = bound_pods(lookup.view, ref)
    if not pods:
        return []
    filters = _filters(lookup, ref, None, resolve, out)
    chains = []
    for pod in pods:
        chains.append(workload_chain(pod, manager_filter(chain_name(pod), POD_ROUTE, filters)))
    out.resources += workload_resources()
    return chains


def waypoint_translation(
    lookup: Lookup, gateway: Json, bound: Iterable[Bound], resolve: JwksResolver
) -> WaypointTranslation:
    """The Listener of a waypoint and everything its chains use."""
    assert lookup.waypoint, "a waypoint translation names inbound-vip clusters"
    ref = (meta(gateway).get("namespace", ""), meta(gateway)["name"])
    out = WaypointTranslation()
    chains: list[lc.FilterChain] = []
    known: dict[str, Target] = {}
    wanted: set[str] = set()
    for item in bound:
        filters = _filters(lookup, ref, item.key, resolve, out)
        for target in item.targets:
            known[target.host] = target
            prefixes = [_prefix(vip) for vip in target.vips]
            for port in target.ports:
                config = route_pb2.RouteConfiguration(
                    name=inbound_route_name(target.host, port.number),
                    virtual_hosts=[
                        rc.VirtualHost(name=target.host, domains=["*"], routes=routes_for(lookup, target, port))
                    ],
                )
                out.resources.append(config)
                wanted |= route_clusters(config)
                wanted.add(lookup.cluster(target.host, port.number))
                wanted |= {
                    lookup.cluster(target.host, port.number, s["name"])
                    for s in subsets(lookup.destination_rule(target.host))
                }
                if not prefixes:
                    continue  # no VIP: ztunnel never sends this Service's traffic to the waypoint
                match = lc.FilterChainMatch(prefix_ranges=prefixes)
                match.destination_port.value = port.number
                service_chain = f"{target.host}:{port.number}"
                route_name = inbound_route_name(target.host, port.number)
                chains.append(
                    lc.FilterChain(
                        name=service_chain,
                        filter_chain_match=match,
                        filters=[manager_filter(service_chain, route_name, filters, _codec(port))],
                    )
                )
    chains += _workload_chains(lookup, ref, resolve, out)
    for name in sorted(wanted):
        _, port, subset, host = name.split("|", 3)
        target = target_of(lookup, host, known)
        if target is not None:
            out.resources += cluster_resources(lookup, target, int(port), subset)
    address = address_pb2.Address(socket_address=address_pb2.SocketAddress(address="0.0.0.0", port_value=HBONE_PORT))
    out.resources.insert(
        0, listener_pb2.Listener(name=waypoint_listener_name(*ref), address=address, filter_chains=chains)
    )
    return out
