"""An ingress gateway's RouteConfigurations `gateway|{N}|{G}|{port}` (docs/ingress.md, "Data path
(contract)" item 2).

Attachment is the ingress job's (mesh/gateway_refs.py: parentRef sectionName and port, the
listener's allowedRoutes namespaces and kinds, hostname intersection), so the routes served are the
ones the Gateway's `attachedRoutes` count. Per port, one virtual host per distinct hostname the
attached routes serve there (the Gateway API intersection of listener and route hostnames, `*`
when neither names one), `domains` = the hostname and `hostname:port`; its routes in Gateway API
precedence with the waypoint's match, action and filter shapes (gateway_routes.py). No catch-all:
a request for another host gets 404 from the gateway.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from mesh.gateway_refs import HTTP_PROTOCOLS, ObjectKey, attach, effective_hostnames, refs_to_gateway
from services.xds.generators.view import labels_of, meta
from services.xds.model import GRPC_ROUTES, HTTP_ROUTES, NAMESPACES

from .gateway_routes import ordered_routes
from .lookup import Lookup
from .resources import gateway_route_name

Json = dict[str, Any]

ROUTE_KIND_NAMES = {HTTP_ROUTES: "HTTPRoute", GRPC_ROUTES: "GRPCRoute"}


def http_listeners(gateway: Json) -> list[Json]:
    """The listeners routes can attach to (HTTP and HTTPS), in the Gateway's order."""
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    return [li for li in listeners if str(li.get("protocol", "")).upper() in HTTP_PROTOCOLS and li.get("name")]


def attached_routes(lookup: Lookup, gateway: Json) -> dict[str, list[tuple[str, Json]]]:
    """Listener name → the (kind key, route) pairs attached to it, oldest route first."""
    m = meta(gateway)
    key = ObjectKey(m.get("namespace", ""), m["name"])
    usable = {li["name"] for li in http_listeners(gateway)}
    out: dict[str, list[tuple[str, Json]]] = defaultdict(list)
    for kind, kind_name in ROUTE_KIND_NAMES.items():
        routes = sorted(lookup.view.list(kind), key=lambda r: (meta(r).get("creationTimestamp") or "", _ident(r)))
        for route in routes:
            refs = refs_to_gateway(route, key)
            if not refs:
                continue
            namespace = lookup.view.get(NAMESPACES, "", meta(route).get("namespace", ""))
            labels = labels_of(namespace) if namespace else {}
            names: set[str] = set()
            for ref in refs:
                names |= set(attach(ref, route, kind_name, gateway, labels, usable).listeners)
            for name in sorted(names):
                out[name].append((kind, route))
    return out


def _ident(route: Json) -> tuple[str, str]:
    return meta(route).get("namespace", ""), meta(route)["name"]


def _host_order(host: str) -> tuple[int, int, str]:
    # Exact hosts, then wildcards (longer first), then `*`: Envoy's own precedence, written out.
    return (2 if host == "*" else 1 if host.startswith("*") else 0, -len(host), host)


def route_configurations(lookup: Lookup, gateway: Json) -> list[route_pb2.RouteConfiguration]:
    """One RouteConfiguration per distinct port of the HTTP / HTTPS listeners."""
    m = meta(gateway)
    attached = attached_routes(lookup, gateway)
    by_port: dict[int, dict[str, list[tuple[str, Json]]]] = {}
    for listener in http_listeners(gateway):
        hosts = by_port.setdefault(int(listener.get("port") or 0), {})
        for kind, route in attached.get(listener["name"], []):
            for host in effective_hostnames(listener, route):
                pairs = hosts.setdefault(host, [])
                if all(_ident(r) != _ident(route) or k != kind for k, r in pairs):
                    pairs.append((kind, route))
    out = []
    for port, hosts in sorted(by_port.items()):
        vhosts = [
            rc.VirtualHost(
                name=f"{host}:{port}",
                domains=["*"] if host == "*" else [host, f"{host}:{port}"],
                routes=ordered_routes(lookup, hosts[host]),
            )
            for host in sorted(hosts, key=_host_order)
        ]
        out.append(
            route_pb2.RouteConfiguration(
                name=gateway_route_name(m.get("namespace", ""), m["name"], port), virtual_hosts=vhosts
            )
        )
    return out
