"""VirtualService `http` routes for a host, as gRPC routes (Istio's translation in
istio/istio: pilot/pkg/networking/core/route, restricted to what a proxyless gRPC client reads).

- VirtualServices naming the host (short names resolved in their namespace) apply oldest first,
  their `http` routes in order; one bound to gateways other than `mesh` does not apply.
- A match applies unless it cannot hold for a gRPC call seen by a shared configuration: another
  `port` than the listener's, `gateways` without `mesh`, `sourceLabels`/`sourceNamespace` (per
  client), `queryParams`, `scheme`, `authority`, a `method` other than POST. A route whose every
  match is dropped is dropped.
- `route` destinations become (weighted) clusters: the destination port, else the listener port
  for the host itself, else the host's first port; a subset must be one of the host's
  DestinationRule subsets. Unusable destinations are dropped; with none left, calls fail
  UNAVAILABLE (Envoy's 503 for a missing cluster, as gRPC maps it).
- `directResponse` fails calls with the gRPC code of its status; `redirect` and `delegate` have
  no gRPC form and are skipped.
- `fault` abort (`grpcStatus`, else `httpStatus` mapped) and fixed delay, each on `percentage`
  (else the deprecated integer `percent`; neither means none), `timeout`, `retries`, and request
  and response `headers` follow.

For a waypoint (`lookup.waypoint`) the HTTP forms apply instead: `method`, `authority` and
`scheme` matches become `:method`, `:authority`, `:scheme` headers and `queryParams` query
parameter matches (only `sourceLabels` / `sourceNamespace` still drop a match); `directResponse`
and a route without usable destinations answer directly (503 for the latter, Envoy's answer to
a missing cluster); aborts keep their HTTP status; `retries` follow Istio's HTTP conversion, with
its default (2 attempts on connect-failure, refused-stream, unavailable, cancelled, 503) when
the route names none; `mirror` / `mirrors` with their percentages become mirror policies.
"""

from __future__ import annotations

import re
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc

from mesh.resources.networking.common import duration_nanos
from services.xds.generators.view import meta
from services.xds.model import VIRTUAL_SERVICES

from .clusters import hash_policy, port_policy, subsets
from .lookup import Lookup
from .resources import resolve_host
from .routing import (
    GRPC_CODES,
    Action,
    Match,
    always_abort,
    fault,
    grpc_code_for_http,
    http_retry_policy,
    retry_policy,
    route,
    route_matches,
)
from .targets import Target, TargetPort

Json = dict[str, Any]

# Istio's retryOn when `retries` names none (networking/core/route/retry).
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
_UNAVAILABLE = GRPC_CODES["UNAVAILABLE"]


def _mesh(gateways: list[str] | None) -> bool:
    return not gateways or "mesh" in gateways


def _string_kind(match: Json) -> tuple[str, str]:
    """(kind, value) of an Istio StringMatch; an empty one means "present"."""
    for kind in ("exact", "prefix", "regex"):
        if match.get(kind) is not None:
            return kind, match[kind]
    return "present", ""


def _accepts_post(match: Json) -> bool:
    """Whether a `method` StringMatch accepts POST, the method of every gRPC call."""
    kind, value = _string_kind(match)
    if kind == "regex":
        try:
            return re.fullmatch(value, "POST") is not None
        except re.error:
            return False
    return {"exact": value == "POST", "prefix": "POST".startswith(value)}.get(kind, True)


_PSEUDO_HEADERS = {"method": ":method", "authority": ":authority", "scheme": ":scheme"}


def _match(m: Json, port: int, waypoint: bool = False) -> Match | None:
    """One HTTPMatchRequest for a listener on `port`, or None when it cannot apply (for a gRPC
    client: also what no gRPC call carries)."""
    if m.get("port") not in (None, port) or not _mesh(m.get("gateways")):
        return None
    if any(m.get(k) for k in ("sourceLabels", "sourceNamespace")):
        return None
    if not waypoint:
        if any(m.get(k) for k in ("queryParams", "scheme", "authority")):
            return None
        if m.get("method") is not None and not _accepts_post(m["method"]):
            return None
    path = _string_kind(m["uri"]) if m.get("uri") else ("", "")
    headers = [(name.lower(), *_string_kind(sm), False) for name, sm in (m.get("headers") or {}).items()]
    headers += [(name.lower(), *_string_kind(sm), True) for name, sm in (m.get("withoutHeaders") or {}).items()]
    query: list[tuple[str, str, str]] = []
    if waypoint:
        headers += [(pseudo, *_string_kind(m[k]), False) for k, pseudo in _PSEUDO_HEADERS.items() if m.get(k)]
        query = [(name, *_string_kind(sm)) for name, sm in sorted((m.get("queryParams") or {}).items())]
    return Match(path if path[0] != "present" else ("", ""), tuple(headers), not m.get("ignoreUriCase"), tuple(query))


def _percent(spec: Json) -> float | None:
    if (spec.get("percentage") or {}).get("value") is not None:
        return float(spec["percentage"]["value"])
    return float(spec["percent"]) if spec.get("percent") is not None else None


def _fault(spec: Json | None, waypoint: bool = False) -> Any:
    if not spec:
        return None
    abort, delay = spec.get("abort") or {}, spec.get("delay") or {}
    code = http_status = None
    if abort.get("grpcStatus"):
        code = GRPC_CODES.get(str(abort["grpcStatus"]).upper())
    elif abort.get("httpStatus") and waypoint:
        http_status = int(abort["httpStatus"])
    elif abort.get("httpStatus"):
        code = grpc_code_for_http(int(abort["httpStatus"]))
    delay_nanos = duration_nanos(delay["fixedDelay"]) if delay.get("fixedDelay") else None
    return fault(code, _percent(abort), delay_nanos, _percent(delay), http_status)


def _destination(
    lookup: Lookup, d: Json, namespace: str, target: Target, port: TargetPort
) -> tuple[str, str, int] | None:
    """(cluster, host, port) of a route destination, or None when nothing serves it."""
    dest = d.get("destination") or {}
    host = resolve_host(dest.get("host") or "", namespace)
    ports = lookup.ports(host)
    number = (dest.get("port") or {}).get("number") or (port.number if host == target.host else None)
    number = number or (ports[0] if ports else None)
    if number is None or number not in ports:
        return None
    subset = dest.get("subset") or ""
    dr = lookup.destination_rule(host)
    if subset and subset not in {s["name"] for s in subsets(dr)}:
        return None
    return lookup.cluster(host, number, subset), host, number


def _direct(lookup: Lookup, status: int, body: str, own: str) -> Action:
    """A route answering by itself: a direct response for a waypoint, an abort for gRPC."""
    if lookup.waypoint:
        return Action(direct_status=status, direct_body=body)
    return always_abort(grpc_code_for_http(status), own)


def _action(lookup: Lookup, http: Json, namespace: str, target: Target, port: TargetPort) -> Action | None:
    own = lookup.cluster(target.host, port.number)
    if http.get("directResponse"):
        direct = http["directResponse"]
        return _direct(lookup, int(direct["status"]), (direct.get("body") or {}).get("string") or "", own)
    if not http.get("route"):
        return None  # redirect or delegate
    dests = http["route"]
    found = [(_destination(lookup, d, namespace, target, port), d.get("weight")) for d in dests]
    live = [(f, 100 if w is None and len(dests) == 1 else int(w or 0)) for f, w in found if f is not None]
    if not any(w > 0 for _, w in live):
        return _direct(lookup, 503, "", own) if lookup.waypoint else always_abort(_UNAVAILABLE, own)
    action = Action(destinations=[(f[0], w) for f, w in live])
    first = next(f for f, w in live if w > 0)
    action.hash_policy = hash_policy(port_policy(lookup.destination_rule(first[1]), first[2]))
    action.fault = _fault(http.get("fault"), lookup.waypoint)
    if lookup.waypoint:
        action.mirrors = _mirrors(lookup, http, namespace, target, port)
    return action


def _mirrors(lookup: Lookup, http: Json, namespace: str, target: Target, port: TargetPort) -> list[tuple[str, float]]:
    """`mirror` (with `mirrorPercentage`, else the deprecated `mirrorPercent`, else 100 %) and
    `mirrors` (each with its `percentage`), as (cluster, percent); unusable mirrors are dropped."""
    wanted: list[tuple[Json, float]] = []
    if http.get("mirror"):
        percent = (http.get("mirrorPercentage") or {}).get("value")
        if percent is None:
            percent = http.get("mirrorPercent", 100)
        wanted.append((http["mirror"], float(percent)))
    for mirror in http.get("mirrors") or []:
        wanted.append((mirror.get("destination") or {}, float((mirror.get("percentage") or {}).get("value", 100))))
    out = []
    for destination, percent in wanted:
        found = _destination(lookup, {"destination": destination}, namespace, target, port)
        if found is not None:
            out.append((found[0], percent))
    return out


def _extras(action: Action, http: Json, waypoint: bool = False) -> None:
    """Timeout, retries and header operations of a route."""
    if http.get("timeout"):
        action.timeout_nanos = duration_nanos(http["timeout"])
    retries = http.get("retries")
    if waypoint and action.direct_status is None:
        retries = retries or {}
        per_try = duration_nanos(retries["perTryTimeout"]) if retries.get("perTryTimeout") else None
        action.retry = http_retry_policy(retries.get("retryOn"), retries.get("attempts"), per_try)
    elif retries:
        per_try = duration_nanos(retries["perTryTimeout"]) if retries.get("perTryTimeout") else None
        conditions = (retries.get("retryOn") or DEFAULT_RETRY_ON).split(",")
        action.retry = retry_policy(conditions, retries.get("attempts"), None, per_try)
    headers = http.get("headers") or {}
    for side in ("request", "response"):
        ops = headers.get(side) or {}
        setattr(action, f"{side}_set", dict(ops.get("set") or {}))
        setattr(action, f"{side}_add", dict(ops.get("add") or {}))
        setattr(action, f"{side}_remove", list(ops.get("remove") or []))


def _http_routes(lookup: Lookup, vs: Json, index: int, http: Json, target: Target, port: TargetPort) -> list[rc.Route]:
    raw = http.get("match")
    matches = [m for m in (_match(x, port.number, lookup.waypoint) for x in raw) if m is not None] if raw else [Match()]
    if not matches:
        return []
    namespace = meta(vs).get("namespace", "")
    action = _action(lookup, http, namespace, target, port)
    if action is None:
        return []
    _extras(action, http, lookup.waypoint)
    name = f"{namespace}/{meta(vs)['name']}/{http.get('name') or index}"
    return [route(name, rm, action) for m in matches for rm in route_matches(m)]


def virtual_service_routes(lookup: Lookup, target: Target, port: TargetPort) -> list[rc.Route]:
    """The routes of every VirtualService for this host, in order (empty when there is none)."""
    out: list[rc.Route] = []
    for vs in lookup.named(VIRTUAL_SERVICES, target.host):
        if not _mesh((vs.get("spec") or {}).get("gateways")):
            continue
        for i, http in enumerate((vs.get("spec") or {}).get("http") or []):
            out += _http_routes(lookup, vs, i, http, target, port)
    return out
