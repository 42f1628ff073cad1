"""Building blocks of gRPC-compatible routes: matchers, cluster actions, faults, retries, timeouts.

Every shape here is one gRPC's xDS client accepts (reference grpc-proxyless-xds, "Resource shapes
the client accepts"; gRFC A28 routing, A31 timeouts, A33 fault injection, A42 ring hash, A44
retries):
- path matchers are `prefix`, `path` or `safe_regex` only (`path_separated_prefix` is not read);
- header matchers use `string_match` (or `present_match`), optionally inverted;
- the action is always `route` with `cluster` or `weighted_clusters` (a redirect or direct
  response fails each call with "Matching route has inappropriate action");
- faults go in `typed_per_filter_config["envoy.filters.http.fault"]` as an HTTPFault, with
  `grpc_status` aborts (gRPC maps an HTTP status the way its HTTP-to-gRPC table does);
- a route timeout is read from `max_stream_duration` (A31), not from `timeout`;
- retries name gRPC status codes in `retry_on` (A44).

A waypoint (docs/waypoint.md) reads Envoy's HTTP forms as well: query parameter matches, HTTP
status aborts, `direct_response`, `request_mirror_policies`, and `http_retry_policy`'s
`retry_on` (Envoy's HTTP conditions with `retriable_status_codes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from .resources import FAULT_FILTER, pack

# gRPC status codes by name (grpc/grpc: doc/statuscodes.md), as Istio's `grpcStatus` names them.
GRPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
# HTTP status → gRPC code as a gRPC client maps a response without grpc-status
# (grpc/grpc: doc/http-grpc-status-mapping.md); every other status is UNKNOWN.
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
# Conditions gRPC retries on (A44: gRPC status names); the HTTP/connection conditions Envoy and
# Istio use mean, for a gRPC client, a call that ended UNAVAILABLE.
GRPC_RETRY_ON = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
_AS_UNAVAILABLE = ("5xx", "gateway-error", "connect-failure", "refused-stream", "reset")


def grpc_code_for_http(status: int) -> int:
    """The gRPC code a client reports for an HTTP status."""
    return _HTTP_TO_GRPC.get(status, GRPC_CODES["UNKNOWN"])


def duration(nanos: int) -> duration_pb2.Duration:
    """A protobuf Duration from nanoseconds."""
    return duration_pb2.Duration(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


def fraction(percent: float) -> percent_pb2.FractionalPercent:
    """A percentage (0-100, fractions allowed) as Istio writes it: per million."""
    per_million = max(0, min(1_000_000, round(percent * 10_000)))
    return percent_pb2.FractionalPercent(numerator=per_million, denominator=percent_pb2.FractionalPercent.MILLION)


# --- matches ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """One request match, in a form both HTTPRoute/GRPCRoute and VirtualService translate to.

    `path` is (kind, value) with kind "exact", "prefix" (string prefix: VirtualService), "segment"
    (path-element prefix: Gateway API PathPrefix), "regex" or "" (any path); `headers` are
    (name, kind, value, invert) with kind "exact", "prefix", "regex" or "present".
    """

    path: tuple[str, str] = ("", "")
    headers: tuple[tuple[str, str, str, bool], ...] = ()
    case_sensitive: bool = True
    query: tuple[tuple[str, str, str], ...] = ()  # (name, kind, value): waypoints only


def _string_match(kind: str, value: str) -> string_pb2.StringMatcher:
    if kind == "regex":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=value))
    if kind == "prefix":
        return string_pb2.StringMatcher(prefix=value)
    return string_pb2.StringMatcher(exact=value)


def header_matcher(name: str, kind: str, value: str, invert: bool = False) -> rc.HeaderMatcher:
    """A HeaderMatcher in the `string_match` form gRPC reads (`present_match` for presence)."""
    if kind == "present":
        return rc.HeaderMatcher(name=name, present_match=True, invert_match=invert)
    return rc.HeaderMatcher(name=name, string_match=_string_match(kind, value), invert_match=invert)


def route_matches(match: Match) -> list[rc.RouteMatch]:
    """The RouteMatches of one Match. A path-element prefix (`/foo` matches `/foo` and `/foo/x`,
    not `/foobar`: Gateway API PathPrefix) becomes an exact and a `/foo/` prefix match, since gRPC
    does not read `path_separated_prefix`."""
    headers = [header_matcher(*h) for h in match.headers]
    kind, value = match.path
    sensitive = None if match.case_sensitive else wrappers_pb2.BoolValue(value=False)
    if kind == "exact":
        paths = [{"path": value}]
    elif kind == "regex":
        paths = [{"safe_regex": regex_pb2.RegexMatcher(regex=value)}]
    elif kind == "segment" and value not in ("", "/") and not value.endswith("/"):
        paths = [{"path": value}, {"prefix": value + "/"}]
    else:
        paths = [{"prefix": value if kind in ("prefix", "segment") else "/"}]
    query = [query_matcher(*q) for q in match.query]
    return [rc.RouteMatch(headers=headers, query_parameters=query, case_sensitive=sensitive, **p) for p in paths]


def query_matcher(name: str, kind: str, value: str) -> rc.QueryParameterMatcher:
    """A QueryParameterMatcher (`present_match` for presence)."""
    if kind == "present":
        return rc.QueryParameterMatcher(name=name, present_match=True)
    return rc.QueryParameterMatcher(name=name, string_match=_string_match(kind, value))


# --- actions ------------------------------------------------------------------------------------


@dataclass
class Action:
    """What a matched route does: destinations (cluster, weight), fault, timeout, retries, headers."""

    destinations: list[tuple[str, int]] = field(default_factory=list)
    fault: fault_pb2.HTTPFault | None = None
    timeout_nanos: int | None = None
    retry: rc.RetryPolicy | None = None
    hash_policy: list[rc.RouteAction.HashPolicy] = field(default_factory=list)
    request_set: Mapping[str, str] = field(default_factory=dict)
    request_add: Mapping[str, str] = field(default_factory=dict)
    request_remove: Sequence[str] = ()
    response_set: Mapping[str, str] = field(default_factory=dict)
    response_add: Mapping[str, str] = field(default_factory=dict)
    response_remove: Sequence[str] = ()
    mirrors: list[tuple[str, float]] = field(default_factory=list)  # (cluster, percent): waypoints only
    direct_status: int | None = None  # answer directly with this HTTP status: waypoints only
    direct_body: str = ""


def _header_options(set_: Mapping[str, str], add: Mapping[str, str]) -> list[base_pb2.HeaderValueOption]:
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    append = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    options = [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v), append_action=overwrite)
        for k, v in set_.items()
    ]
    options += [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v), append_action=append)
        for k, v in add.items()
    ]
    return options


def route_action(action: Action) -> rc.RouteAction:
    """`cluster` for one destination, `weighted_clusters` for several (weights > 0 only: gRPC
    NACKs a route whose weights are all 0, so callers replace such a rule by an abort)."""
    live = [(c, w) for c, w in action.destinations if w > 0]
    out = rc.RouteAction(hash_policy=action.hash_policy, retry_policy=action.retry)
    if len(live) == 1:
        out.cluster = live[0][0]
    else:
        weights = [rc.WeightedCluster.ClusterWeight(name=c, weight=wrappers_pb2.UInt32Value(value=w)) for c, w in live]
        out.weighted_clusters.CopyFrom(rc.WeightedCluster(clusters=weights))
    for mirror, percent in action.mirrors:
        policy = rc.RouteAction.RequestMirrorPolicy(cluster=mirror)
        policy.runtime_fraction.default_value.CopyFrom(fraction(percent))
        out.request_mirror_policies.append(policy)
    if action.timeout_nanos is not None:
        # Envoy reads `timeout`; gRPC reads max_stream_duration (A31). 0 means no limit in both.
        out.timeout.CopyFrom(duration(action.timeout_nanos))
        out.max_stream_duration.max_stream_duration.CopyFrom(duration(action.timeout_nanos))
        out.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(action.timeout_nanos))
    return out


def route(name: str, match: rc.RouteMatch, action: Action) -> rc.Route:
    """One Route: the match, the action, the per-route fault override and header changes."""
    out = rc.Route(
        name=name,
        match=match,
        request_headers_to_add=_header_options(action.request_set, action.request_add),
        request_headers_to_remove=list(action.request_remove),
        response_headers_to_add=_header_options(action.response_set, action.response_add),
        response_headers_to_remove=list(action.response_remove),
    )
    if action.direct_status is not None:
        out.direct_response.status = action.direct_status
        if action.direct_body:
            out.direct_response.body.inline_string = action.direct_body
    else:
        out.route.CopyFrom(route_action(action))
    if action.fault is not None:
        out.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(action.fault))
    return out


# --- faults, retries ------------------------------------------------------------------------------


def fault(
    abort_code: int | None = None,
    abort_percent: float | None = None,
    delay_nanos: int | None = None,
    delay_percent: float | None = None,
    abort_http_status: int | None = None,
) -> fault_pb2.HTTPFault | None:
    """An HTTPFault aborting with a gRPC code (or, for a waypoint, an HTTP status) and/or
    delaying, each on a percentage of calls."""
    out = fault_pb2.HTTPFault()
    if abort_percent is not None and abort_http_status is not None:
        out.abort.CopyFrom(fault_pb2.FaultAbort(http_status=abort_http_status, percentage=fraction(abort_percent)))
    elif abort_code is not None and abort_percent is not None:
        out.abort.CopyFrom(fault_pb2.FaultAbort(grpc_status=abort_code, percentage=fraction(abort_percent)))
    if delay_nanos is not None and delay_percent is not None:
        out.delay.CopyFrom(
            common_fault.FaultDelay(fixed_delay=duration(delay_nanos), percentage=fraction(delay_percent))
        )
    return out if out.HasField("abort") or out.HasField("delay") else None


def always_abort(code: int, cluster: str) -> Action:
    """An action that fails every call with `code` (a rule with no usable backend). A route still
    needs a cluster to be valid; the fault stops each call before it is sent there."""
    return Action(destinations=[(cluster, 1)], fault=fault(abort_code=code, abort_percent=100))


def retry_policy(
    conditions: Iterable[str], attempts: int | None, backoff_nanos: int | None, per_try_nanos: int | None = None
) -> rc.RetryPolicy | None:
    """A RetryPolicy gRPC applies: its `retry_on` keeps the gRPC conditions (others mapped as in
    `_AS_UNAVAILABLE` or dropped); no condition left, or 0 attempts, means no retries."""
    names: list[str] = []
    for condition in conditions:
        condition = condition.strip().lower()
        name = "unavailable" if condition in _AS_UNAVAILABLE else condition
        if name in GRPC_RETRY_ON and name not in names:
            names.append(name)
    if not names or attempts == 0:
        return None
    policy = rc.RetryPolicy(retry_on=",".join(names))
    if attempts is not None:
        policy.num_retries.value = attempts
    if backoff_nanos:  # gRPC NACKs a zero base interval (A44); Envoy's default max is 10x base
        policy.retry_back_off.base_interval.CopyFrom(duration(backoff_nanos))
        policy.retry_back_off.max_interval.CopyFrom(duration(backoff_nanos * 10))
    if per_try_nanos:
        policy.per_try_timeout.CopyFrom(duration(per_try_nanos))
    return policy


# Istio's retry policy when a route names none (networking/core/route/retry: DefaultPolicy).
HTTP_DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
HTTP_DEFAULT_ATTEMPTS = 2
HTTP_DEFAULT_RETRIABLE_CODES = (503,)
_RETRIABLE = "retriable-status-codes"


def http_retry_policy(
    retry_on: str | None,
    attempts: int | None,
    per_try_nanos: int | None = None,
    backoff_nanos: int | None = None,
) -> rc.RetryPolicy | None:
    """A waypoint's RetryPolicy, as Istio writes it (retry.ConvertPolicy): `retry_on` keeps
    Envoy's HTTP and gRPC condition names; a number in it is an HTTP status, which becomes a
    `retriable_status_codes` entry (and the `retriable-status-codes` condition). No `retry_on`
    means Istio's default conditions with 503; no attempts means 2; 0 attempts means no retries."""
    if attempts == 0:
        return None
    conditions: list[str] = []
    codes: list[int] = []
    text = HTTP_DEFAULT_RETRY_ON if retry_on is None else retry_on
    for item in text.split(","):
        item = item.strip()
        if item.isdigit():
            codes.append(int(item))
            item = _RETRIABLE
        if item and item not in conditions:
            conditions.append(item)
    if retry_on is None:
        codes = list(HTTP_DEFAULT_RETRIABLE_CODES)
    if not conditions:
        return None
    policy = rc.RetryPolicy(retry_on=",".join(conditions), retriable_status_codes=sorted(set(codes)))
    policy.num_retries.value = HTTP_DEFAULT_ATTEMPTS if attempts is None else attempts
    if per_try_nanos:
        policy.per_try_timeout.CopyFrom(duration(per_try_nanos))
    if backoff_nanos:
        policy.retry_back_off.base_interval.CopyFrom(duration(backoff_nanos))
        policy.retry_back_off.max_interval.CopyFrom(duration(backoff_nanos * 10))
    return policy
