"""HTTPRoute and GRPCRoute rules attached to a Service, as gRPC routes.

Attachment (Gateway API GAMMA, as Istio implements it for the mesh): a parentRef with `group: ""`,
`kind: Service` naming the Service, with no `port` or the listener's port, and no `sectionName` or
the port's name. Only routes in the Service's own namespace ("producer routes") apply: a route in
another namespace applies to that namespace's clients only, which a configuration shared by all
clients cannot express.

Order (Istio's sortHTTPRoutes, the Gateway API precedence): exact path, then prefix, then regular
expression, longer values first; then with a method match; then more header matches; then more
query matches; ties by the route's age, then its rules' and matches' order. A GRPCRoute method
match is a path (Istio's conversion): service and method → exact `/svc/method`, service only →
prefix `/svc/`, method only → regex `/[^/]+/method`.

Backends: `weight` 0 is dropped; a Service in another namespace (unless `lookup.backend_allowed`:
never for mesh routes, by ReferenceGrant for an ingress gateway's), a kind other than Service or
Istio's Hostname, or a port the host does not serve is unusable and dropped. A rule left with no
backend fails its calls with UNKNOWN (HTTP 500, the Gateway API answer, as gRPC maps it).

For a waypoint (`lookup.waypoint`): `method` and `queryParams` matches apply (as a `:method`
header and query parameter matches), a rule without backends answers 500 directly, the
RequestMirror filter becomes a mirror policy (its `percent` or `fraction`, else 100 %), `retry`
becomes an HTTP retry policy on its codes (Istio's default policy when the rule has none), and
`timeouts.backendRequest` the per-try timeout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc

from mesh.resources.gateway.common import duration_ms
from services.xds.generators.view import meta
from services.xds.model import GRPC_ROUTES, HTTP_ROUTES

from .clusters import hash_policy, port_policy
from .lookup import Lookup, service_parents
from .resources import service_host
from .routing import (
    GRPC_CODES,
    Action,
    Match,
    always_abort,
    grpc_code_for_http,
    http_retry_policy,
    retry_policy,
    route,
    route_matches,
)
from .targets import Target, TargetPort

Json = dict[str, Any]

_PATH_KINDS = {"Exact": "exact", "PathPrefix": "segment", "RegularExpression": "regex"}
_PATH_RANK = {"exact": 3, "segment": 2, "prefix": 2, "regex": 1, "": -1}
_GATEWAY_500 = grpc_code_for_http(500)
_KIND_NAMES = {HTTP_ROUTES: "HTTPRoute", GRPC_ROUTES: "GRPCRoute"}  # as ReferenceGrants name them


@dataclass(frozen=True)
class _Entry:
    rank: tuple[Any, ...]
    name: str
    match: Match
    action: Action


def attached(route_obj: Json, target: Target, port: TargetPort) -> bool:
    """Whether a route applies to this Service port."""
    namespace = meta(route_obj).get("namespace", "")
    if namespace != target.namespace:
        return False
    for ref in service_parents(route_obj):
        if service_host(ref["name"], ref.get("namespace") or namespace) != target.host:
            continue
        if ref.get("port") not in (None, port.number) or ref.get("sectionName") not in (None, port.name):
            continue
        return True
    return False


def _value_kind(item: Json) -> str:
    return "regex" if item.get("type") == "RegularExpression" else "exact"


def _http_match(m: Json, waypoint: bool = False) -> Match | None:
    """An HTTPRoute match; for a gRPC client None when no call can satisfy it (query parameters, a
    method other than POST: gRPC calls are POSTs without a query string)."""
    if not waypoint and (m.get("queryParams") or m.get("method") not in (None, "POST")):
        return None
    path = m.get("path") or {}
    kind = _PATH_KINDS[path.get("type") or "PathPrefix"]
    headers = tuple((h["name"].lower(), _value_kind(h), h["value"], False) for h in m.get("headers") or [])
    query: tuple[tuple[str, str, str], ...] = ()
    if waypoint:
        if m.get("method"):
            headers += ((":method", "exact", m["method"], False),)
        query = tuple((q["name"], _value_kind(q), q["value"]) for q in m.get("queryParams") or [])
    return Match((kind, path.get("value", "/")), headers, query=query)


def _grpc_match(m: Json) -> Match:
    method = m.get("method") or {}
    service, name = method.get("service"), method.get("method")
    if method.get("type") == "RegularExpression":
        path = ("regex", f"/{service or '[^/]+'}/{name or '[^/]+'}")
    elif service and name:
        path = ("exact", f"/{service}/{name}")
    elif service:
        path = ("prefix", f"/{service}/")
    elif name:
        path = ("regex", f"/[^/]+/{re.escape(name)}")
    else:
        path = ("", "")
    headers = tuple(
        (h["name"].lower(), "regex" if h.get("type") == "RegularExpression" else "exact", h["value"], False)
        for h in m.get("headers") or []
    )
    return Match(path, headers)


def _rank(match: Match, raw: Json) -> tuple[int, int, bool, int, int]:
    """Istio's sortHTTPRoutes key: path kind (exact, prefix, regex), path length, an HTTP method
    match, header matches, query matches (more first)."""
    kind, value = match.path
    return (
        -_PATH_RANK[kind],
        -len(value),
        raw.get("method") is None,
        -len(match.headers),
        -len(raw.get("queryParams") or []),
    )


def _backend(lookup: Lookup, ref: Json, namespace: str, route_kind: str) -> tuple[str, str, int] | None:
    """(cluster, host, port) of a backendRef, or None when it is unusable."""
    group, kind = ref.get("group") or "", ref.get("kind") or "Service"
    target_ns = ref.get("namespace") or namespace
    if target_ns != namespace and not lookup.backend_allowed(route_kind, namespace, target_ns, ref.get("name") or ""):
        return None
    if group == "" and kind == "Service":
        host = service_host(ref["name"], target_ns)
    elif group == "networking.istio.io" and kind == "Hostname":
        host = ref["name"]
    else:
        return None
    ports = lookup.ports(host)
    port = ref.get("port") or (ports[0] if ports else None)
    if port is None or port not in ports:
        return None
    return lookup.cluster(host, port), host, port


# The header-modifier filters and the Action fields they fill.
_MODIFIERS = {
    "RequestHeaderModifier": ("requestHeaderModifier", "request"),
    "ResponseHeaderModifier": ("responseHeaderModifier", "response"),
}
_CODE_NAMES = {code: name.lower().replace("_", "-") for name, code in GRPC_CODES.items()}


def _headers(action: Action, filters: list[Json]) -> None:
    """Header modifier filters (the others: redirects, rewrites, mirrors, have no gRPC form)."""
    for f in filters:
        field, prefix = _MODIFIERS.get(f.get("type") or "", ("", ""))
        modifier = f.get(field) if field else None
        if modifier:
            setattr(action, f"{prefix}_set", {h["name"]: h["value"] for h in modifier.get("set") or []})
            setattr(action, f"{prefix}_add", {h["name"]: h["value"] for h in modifier.get("add") or []})
            setattr(action, f"{prefix}_remove", list(modifier.get("remove") or []))


def _nanos(value: str | None) -> int | None:
    """A Gateway API duration (`500ms`, `1h30m`) in nanoseconds."""
    return duration_ms(value) * 1_000_000 if value else None


def _retry(rule: Json) -> rc.RetryPolicy | None:
    """HTTPRoute `retry`: the HTTP codes become the gRPC codes a client sees for them (503 →
    unavailable); codes gRPC cannot retry on are dropped; no codes means 503."""
    retry = rule.get("retry")
    if retry is None:
        return None
    conditions = [_CODE_NAMES[grpc_code_for_http(code)] for code in retry.get("codes") or [503]]
    return retry_policy(conditions, retry.get("attempts"), _nanos(retry.get("backoff")))


def _mirror_percent(mirror: Json) -> float:
    if mirror.get("percent") is not None:
        return float(mirror["percent"])
    share = mirror.get("fraction")
    if share and share.get("denominator", 100):
        return 100.0 * share["numerator"] / share.get("denominator", 100)
    return 100.0


def _mirrors(lookup: Lookup, filters: list[Json], namespace: str, route_kind: str) -> list[tuple[str, float]]:
    """RequestMirror filters as (cluster, percent); an unusable backend is dropped."""
    out = []
    for f in filters:
        mirror = f.get("requestMirror") if f.get("type") == "RequestMirror" else None
        found = _backend(lookup, mirror.get("backendRef") or {}, namespace, route_kind) if mirror else None
        if mirror and found is not None:
            out.append((found[0], _mirror_percent(mirror)))
    return out


def _http_retry(rule: Json) -> rc.RetryPolicy | None:
    """HTTPRoute `retry` for a waypoint, as Istio converts it: its codes on top of the default
    connection conditions; none means Istio's default policy."""
    retry = rule.get("retry")
    backend_timeout = _nanos((rule.get("timeouts") or {}).get("backendRequest"))
    if retry is None:
        return http_retry_policy(None, None, backend_timeout)
    codes = ",".join(str(code) for code in retry.get("codes") or [])
    retry_on = "connect-failure,refused-stream,unavailable,cancelled" + (f",{codes}" if codes else "")
    return http_retry_policy(retry_on, retry.get("attempts"), backend_timeout, _nanos(retry.get("backoff")))


def _action(lookup: Lookup, rule: Json, namespace: str, own_cluster: str, route_kind: str) -> Action:
    backends = [
        (found, 1 if ref.get("weight") is None else int(ref["weight"]))
        for ref in rule.get("backendRefs") or []
        if (found := _backend(lookup, ref, namespace, route_kind)) is not None
    ]
    if not any(weight > 0 for _, weight in backends) and lookup.waypoint:
        action = Action(direct_status=500)
    elif not any(weight > 0 for _, weight in backends):
        action = always_abort(_GATEWAY_500, own_cluster)
    else:
        action = Action(destinations=[(found[0], weight) for found, weight in backends])
        first = next(found for found, weight in backends if weight > 0)
        dr = lookup.destination_rule(first[1])
        action.hash_policy = hash_policy(port_policy(dr, first[2]))
    _headers(action, rule.get("filters") or [])
    timeouts = rule.get("timeouts") or {}
    if timeouts.get("request"):
        action.timeout_nanos = _nanos(timeouts["request"])
    if not lookup.waypoint:
        action.retry = _retry(rule)
    elif action.direct_status is None:
        action.retry = _http_retry(rule)
        action.mirrors = _mirrors(lookup, rule.get("filters") or [], namespace, route_kind)
    return action


def _entries(lookup: Lookup, kind: str, obj: Json, own_cluster: str) -> list[_Entry]:
    m, spec = meta(obj), obj.get("spec") or {}
    age = (m.get("creationTimestamp") or "", m.get("namespace", ""), m["name"])
    out = []
    for i, rule in enumerate(spec.get("rules") or []):
        action = _action(lookup, rule, m.get("namespace", ""), own_cluster, _KIND_NAMES[kind])
        raw_matches = rule.get("matches") or [
            {"path": {"type": "PathPrefix", "value": "/"}} if kind == HTTP_ROUTES else {}
        ]
        for j, raw in enumerate(raw_matches):
            match = _http_match(raw, lookup.waypoint) if kind == HTTP_ROUTES else _grpc_match(raw)
            if match is not None:
                name = f"{m.get('namespace', '')}/{m['name']}/{i}/{j}"
                http_raw = raw if kind == HTTP_ROUTES else {}  # a GRPCRoute's `method` is no HTTP method
                out.append(_Entry((*_rank(match, http_raw), age, i, j), name, match, action))
    return out


def gateway_routes(lookup: Lookup, target: Target, port: TargetPort) -> list[rc.Route]:
    """The routes of every HTTPRoute and GRPCRoute attached to this Service port, in precedence
    order (empty when none is attached)."""
    attached_routes = [
        (kind, obj)
        for kind in (HTTP_ROUTES, GRPC_ROUTES)
        for obj in lookup.named(kind, target.host)
        if attached(obj, target, port)
    ]
    return ordered_routes(lookup, attached_routes, lookup.cluster(target.host, port.number))


def ordered_routes(lookup: Lookup, routes: Iterable[tuple[str, Json]], own_cluster: str = "") -> list[rc.Route]:
    """The routes of these (kind key, HTTPRoute or GRPCRoute) pairs in precedence order (also an
    ingress gateway's virtual host's; `own_cluster` is where a gRPC client's failing rule points)."""
    entries = [e for kind, obj in routes for e in _entries(lookup, kind, obj, own_cluster)]
    entries.sort(key=lambda e: e.rank)
    return [route(e.name, rm, e.action) for e in entries for rm in route_matches(e.match)]
