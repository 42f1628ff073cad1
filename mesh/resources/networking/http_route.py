"""HTTP routes of a VirtualService: the schema of `spec.http[*]` and the rules Istio's webhook
applies to each route (istio/istio `validateHTTPRoute` and the helpers it calls).
"""

from __future__ import annotations

import http
import re
from typing import Literal

from pydantic import Field

from ..base import Cause, Labels, Model, forbidden, invalid
from .checks import (
    authority_set_by,
    base64_error,
    check_destination,
    check_duration,
    check_gateway_names,
    check_headers,
    check_percentage,
    check_route_destinations,
    check_string_match,
    dns_label_ok,
    match_header_name_error,
    port_error,
    regex_error,
    required_because,
)
from .common import Destination, Duration, Headers, Int32, Percent, StringMatch, UInt32, duration_nanos

# --- HTTP routes ---------------------------------------------------------------------------------


class HTTPMatchRequest(Model):
    """Conditions on a request; all set fields must hold."""

    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] | None = None
    port: UInt32 | None = None
    source_labels: Labels | None = None
    gateways: list[str] | None = None
    query_params: dict[str, StringMatch] | None = None
    ignore_uri_case: bool | None = None
    without_headers: dict[str, StringMatch] | None = None
    source_namespace: str | None = None
    stat_prefix: str | None = None


class HTTPRouteDestination(Model):
    """A weighted destination of an HTTP route, with its own header edits."""

    destination: Destination
    weight: Int32 | None = None
    headers: Headers | None = None


class HTTPRedirect(Model):
    """A redirect answered by the proxy instead of forwarding."""

    uri: str | None = None
    authority: str | None = None
    port: UInt32 | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: UInt32 | None = None


class HTTPBody(Model):
    """A direct response body: `string`, or `bytes` in base64."""

    string: str | None = None
    bytes: str | None = None


class HTTPDirectResponse(Model):
    """A fixed response answered by the proxy."""

    status: UInt32
    body: HTTPBody | None = None


class Delegate(Model):
    """The VirtualService that holds the routes of a root route."""

    name: str | None = None
    namespace: str | None = None


class RegexRewrite(Model):
    """Rewrite the path with an RE2 `match` and its `rewrite` replacement."""

    match: str | None = None
    rewrite: str | None = None


class HTTPRewrite(Model):
    """URI and authority rewrites applied before forwarding."""

    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


class HTTPRetry(Model):
    """Retry policy of an HTTP route."""

    attempts: Int32 | None = None
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: Duration | None = None


class FaultDelay(Model):
    """Injected latency; `percent` is the deprecated integer form of `percentage`."""

    fixed_delay: Duration | None = None
    exponential_delay: Duration | None = None
    percent: Int32 | None = None
    percentage: Percent | None = None


class FaultAbort(Model):
    """Injected failure: one of an HTTP status, a gRPC status or an HTTP/2 error."""

    http_status: Int32 | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None


class HTTPFaultInjection(Model):
    """Client-side fault injection: a delay and/or an abort."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class HTTPMirrorPolicy(Model):
    """One of several mirror destinations, each with its own percentage."""

    destination: Destination
    percentage: Percent | None = None


class CorsPolicy(Model):
    """CORS answered by the proxy; `allowOrigin` is the deprecated string-list form."""

    allow_origin: list[str] | None = None
    allow_origins: list[StringMatch] | None = None
    allow_methods: list[str] | None = None
    allow_headers: list[str] | None = None
    expose_headers: list[str] | None = None
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None


class HTTPRoute(Model):
    """One HTTP rule: matches, then forward, redirect, answer directly or delegate."""

    name: str | None = None
    match: list[HTTPMatchRequest] | None = None
    route: list[HTTPRouteDestination] | None = None
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] | None = None
    # The deprecated UInt32 mirror percentage: Istio's CRD lists it under both spellings.
    mirror_percent: UInt32 | None = None
    mirror_percent_snake: UInt32 | None = Field(default=None, alias="mirror_percent")
    mirror_percentage: Percent | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None


# --- rules ---------------------------------------------------------------------------------------

# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on policies; HTTP status codes are also taken.
# fmt: off
RETRY_ON_POLICIES = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx",
    "refused-stream", "retriable-status-codes", "retriable-headers", "envoy-ratelimited",
    "http3-post-connect-failure",
    # x-envoy-retry-grpc-on
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
})
# The gRPC status names Istio knows (grpc-go's codes).
GRPC_STATUSES = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
})
# fmt: on
CORS_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"})
_CORS_HEADER = re.compile(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+$")
_DIRECT_RESPONSE_MAX = 1024 * 1024


def check_http_route(path: str, route: HTTPRoute, *, delegate: bool) -> list[Cause]:
    """Every rule Istio applies to one HTTP route; `delegate` is true inside a delegate VS."""
    causes = _conflict_causes(path, route, delegate)
    for j, match in enumerate(route.match or []):
        causes += _match_causes(f"{path}.match[{j}]", match)
    causes += check_headers(f"{path}.headers", route.headers)
    causes += _cors_causes(f"{path}.corsPolicy", route.cors_policy)
    causes += _fault_causes(f"{path}.fault", route.fault)
    causes += _mirror_causes(path, route)
    causes += _redirect_causes(f"{path}.redirect", route.redirect)
    causes += _direct_response_causes(f"{path}.directResponse", route.direct_response)
    causes += _retry_causes(f"{path}.retries", route.retries)
    causes += _rewrite_causes(f"{path}.rewrite", route.rewrite)
    causes += _authority_causes(path, route)
    for k, dest in enumerate(route.route or []):
        causes += check_headers(f"{path}.route[{k}].headers", dest.headers)
    causes += check_route_destinations(f"{path}.route", route.route or [])
    causes += check_duration(f"{path}.timeout", route.timeout)
    return causes


def _exclusive(path: str, owner: str, fields: dict[str, object]) -> list[Cause]:
    return [
        forbidden(f"{path}.{name}", f"may not be set together with {owner}") for name, value in fields.items() if value
    ]


def _conflict_causes(path: str, route: HTTPRoute, delegate: bool) -> list[Cause]:
    # A root route (one that delegates) only matches; the delegate VS supplies the action.
    if route.delegate is not None and not delegate:
        return _exclusive(path, "delegate", {"redirect": route.redirect, "route": route.route})
    causes = []
    if delegate and route.delegate is not None:
        causes.append(forbidden(f"{path}.delegate", "a delegate VirtualService cannot delegate further"))
    if route.redirect is not None:
        others = {"route": route.route, "fault": route.fault, "rewrite": route.rewrite}
        causes += _exclusive(path, "redirect", {**others, "directResponse": route.direct_response})
    elif route.direct_response is not None:
        causes += _exclusive(
            path, "directResponse", {"route": route.route, "fault": route.fault, "rewrite": route.rewrite}
        )
    elif not route.route:
        causes.append(required_because(f"{path}.route", "one of route, redirect or directResponse is required"))
    if route.mirror is not None and route.mirrors:
        causes.append(forbidden(f"{path}.mirrors", "may not be set together with mirror"))
    return causes


def _header_match_causes(path: str, matches: dict[str, StringMatch] | None, *, without: bool) -> list[Cause]:
    causes: list[Cause] = []
    for name, match in (matches or {}).items():
        problem = match_header_name_error(name)
        if problem:
            causes.append(invalid(path, name, problem))
        # In withoutHeaders, regex "*" is not a regex: it means "header present".
        if not (without and match.regex == "*"):
            causes += check_string_match(f"{path}.{name}", match)
    return causes


def _match_causes(path: str, match: HTTPMatchRequest) -> list[Cause]:
    causes = _header_match_causes(f"{path}.headers", match.headers, without=False)
    causes += _header_match_causes(f"{path}.withoutHeaders", match.without_headers, without=True)
    # Envoy takes an empty path prefix ("match everything") but not an empty prefix elsewhere.
    causes += check_string_match(f"{path}.uri", match.uri, empty_prefix=True)
    for field in ("scheme", "method", "authority"):
        causes += check_string_match(f"{path}.{field}", getattr(match, field))
    for name, param in (match.query_params or {}).items():
        causes += check_string_match(f"{path}.queryParams.{name}", param)
    if match.port and port_error(match.port):
        causes.append(invalid(f"{path}.port", match.port, "port number must be in the range 1..65535"))
    causes += check_gateway_names(f"{path}.gateways", match.gateways)
    if match.source_namespace and not dns_label_ok(match.source_namespace):
        causes.append(invalid(f"{path}.sourceNamespace", match.source_namespace, "must be a namespace name"))
    return causes


def _cors_origin_causes(path: str, origins: list[StringMatch]) -> list[Cause]:
    causes: list[Cause] = []
    for k, origin in enumerate(origins):
        if not (origin.exact or origin.prefix or origin.regex):
            causes.append(invalid(f"{path}[{k}]", "", "an allowed origin needs a non-empty exact, prefix or regex"))
        else:
            causes += check_string_match(f"{path}[{k}]", origin)
    return causes


def _cors_causes(path: str, cors: CorsPolicy | None) -> list[Cause]:
    if cors is None:
        return []
    causes = _cors_origin_causes(f"{path}.allowOrigins", cors.allow_origins or [])
    for k, method in enumerate(cors.allow_methods or []):
        if method not in CORS_METHODS:
            causes.append(invalid(f"{path}.allowMethods[{k}]", method, "not a supported HTTP method"))
    for field, names in (("allowHeaders", cors.allow_headers), ("exposeHeaders", cors.expose_headers)):
        for k, name in enumerate(names or []):
            if name != "*" and not _CORS_HEADER.match(name):
                causes.append(invalid(f"{path}.{field}[{k}]", name, "not a valid header name"))
    causes += check_duration(f"{path}.maxAge", cors.max_age)
    nanos = duration_nanos(cors.max_age) if cors.max_age else None
    if nanos and nanos % 1_000_000_000:
        # Access-Control-Max-Age is a number of seconds.
        causes.append(invalid(f"{path}.maxAge", cors.max_age, "must be a whole number of seconds"))
    return causes


def _abort_causes(path: str, abort: FaultAbort) -> list[Cause]:
    causes = check_percentage(f"{path}.percentage", abort.percentage)
    error_types = {
        "httpStatus": abort.http_status,
        "grpcStatus": abort.grpc_status,
        "http2Error": abort.http2_error,
    }
    kinds = [name for name, value in error_types.items() if value is not None]
    if len(kinds) > 1:
        return [*causes, forbidden(f"{path}.{kinds[1]}", f"may not be set together with {kinds[0]}")]
    # Istio accepts an abort without an error type (it only warns), so none is not refused.
    if abort.http_status is not None and not 200 <= abort.http_status <= 600:
        causes.append(invalid(f"{path}.httpStatus", abort.http_status, "must be an HTTP status code from 200 to 599"))
    if abort.grpc_status is not None and abort.grpc_status not in GRPC_STATUSES:
        why = "not a gRPC status name (such as NOT_FOUND or UNAVAILABLE)"
        causes.append(invalid(f"{path}.grpcStatus", abort.grpc_status, why))
    if abort.http2_error is not None:
        causes.append(invalid(f"{path}.http2Error", abort.http2_error, "HTTP/2 abort fault injection is not supported"))
    return causes


def _delay_causes(path: str, delay: FaultDelay) -> list[Cause]:
    causes = check_percentage(f"{path}.percentage", delay.percentage)
    if delay.fixed_delay is not None and delay.exponential_delay is not None:
        return [*causes, forbidden(f"{path}.exponentialDelay", "may not be set together with fixedDelay")]
    causes += check_duration(f"{path}.fixedDelay", delay.fixed_delay)
    if delay.exponential_delay is not None:
        causes.append(invalid(f"{path}.exponentialDelay", delay.exponential_delay, "exponentialDelay is not supported"))
    return causes


def _fault_causes(path: str, fault: HTTPFaultInjection | None) -> list[Cause]:
    if fault is None:
        return []
    if fault.abort is None and fault.delay is None:
        return [required_because(path, "a fault needs an abort and/or a delay")]
    causes = _abort_causes(f"{path}.abort", fault.abort) if fault.abort else []
    return causes + (_delay_causes(f"{path}.delay", fault.delay) if fault.delay else [])


def _mirror_percent_causes(path: str, percent: Percent | None) -> list[Cause]:
    value = percent.value if percent else None
    if value is not None and not 0 <= value <= 100:
        return [invalid(f"{path}.value", value, "must be between 0 and 100")]
    return []


def _mirror_causes(path: str, route: HTTPRoute) -> list[Cause]:
    causes: list[Cause] = []
    for field, value in (
        ("mirrorPercent", route.mirror_percent),
        ("mirror_percent", route.mirror_percent_snake),
    ):
        if value is not None and value > 100:
            causes.append(invalid(f"{path}.{field}", value, "must be at most 100"))
    causes += _mirror_percent_causes(f"{path}.mirrorPercentage", route.mirror_percentage)
    causes += check_destination(f"{path}.mirror", route.mirror)
    for k, mirror in enumerate(route.mirrors or []):
        causes += check_destination(f"{path}.mirrors[{k}].destination", mirror.destination)
        causes += _mirror_percent_causes(f"{path}.mirrors[{k}].percentage", mirror.percentage)
    return causes


def _redirect_causes(path: str, redirect: HTTPRedirect | None) -> list[Cause]:
    if redirect is None:
        return []
    causes: list[Cause] = []
    has_port = redirect.port is not None or redirect.derive_port is not None
    if not (redirect.uri or redirect.authority or redirect.scheme or has_port):
        causes.append(required_because(path, "a redirect must set uri, authority, scheme or port"))
    if redirect.port is not None and redirect.derive_port is not None:
        causes.append(forbidden(f"{path}.derivePort", "may not be set together with port"))
    if redirect.redirect_code and not 300 <= redirect.redirect_code <= 399:
        causes.append(invalid(f"{path}.redirectCode", redirect.redirect_code, "must be a 3xx status code"))
    if redirect.scheme and redirect.scheme not in ("http", "https"):
        causes.append(invalid(f"{path}.scheme", redirect.scheme, 'must be "http" or "https"'))
    if redirect.port and port_error(redirect.port):
        causes.append(invalid(f"{path}.port", redirect.port, "port number must be in the range 1..65535"))
    return causes


def _direct_response_causes(path: str, response: HTTPDirectResponse | None) -> list[Cause]:
    if response is None:
        return []
    causes: list[Cause] = []
    if not 200 <= response.status <= 600:
        causes.append(invalid(f"{path}.status", response.status, "must be an HTTP status code from 200 to 599"))
    body = response.body
    if body is None:
        return causes
    if body.string is not None and body.bytes is not None:
        return [*causes, forbidden(f"{path}.body.bytes", "may not be set together with string")]
    problem = base64_error(body.bytes) if body.bytes is not None else None
    if problem:
        return [*causes, invalid(f"{path}.body.bytes", "", problem)]
    size = len(body.string.encode()) if body.string is not None else len(body.bytes or "") * 3 // 4
    if size > _DIRECT_RESPONSE_MAX:
        # Every proxy receives the body in its configuration.
        causes.append(invalid(f"{path}.body", "", "a direct response body must be smaller than 1MB"))
    return causes


def _retry_on_causes(path: str, retry_on: str) -> list[Cause]:
    causes = []
    for policy in retry_on.split(","):
        is_status = bool(re.fullmatch(r"[+-]?\d+", policy)) and int(policy) in http.HTTPStatus._value2member_map_
        if not is_status and policy not in RETRY_ON_POLICIES:
            causes.append(invalid(path, retry_on, f"{policy!r} is not a valid retryOn policy"))
    return causes


def _retry_causes(path: str, retries: HTTPRetry | None) -> list[Cause]:
    if retries is None:
        return []
    causes: list[Cause] = []
    attempts = retries.attempts or 0
    if attempts < 0:
        causes.append(invalid(f"{path}.attempts", attempts, "must be greater than or equal to 0"))
    tuned = retries.per_try_timeout is not None or retries.retry_on or retries.retry_remote_localities is not None
    if attempts == 0 and tuned:
        why = "retries are off when attempts is 0, yet perTryTimeout, retryOn or retryRemoteLocalities is set"
        causes.append(invalid(f"{path}.attempts", attempts, why))
    causes += check_duration(f"{path}.perTryTimeout", retries.per_try_timeout)
    causes += check_duration(f"{path}.backoff", retries.backoff)
    if retries.retry_on:
        causes += _retry_on_causes(f"{path}.retryOn", retries.retry_on)
    return causes


def _rewrite_causes(path: str, rewrite: HTTPRewrite | None) -> list[Cause]:
    if rewrite is None:
        return []
    regex = rewrite.uri_regex_rewrite
    if rewrite.uri and regex is not None:
        return [forbidden(f"{path}.uriRegexRewrite", "may not be set together with uri")]
    if not rewrite.uri and regex is None and not rewrite.authority:
        return [required_because(path, "a rewrite must set uri, uriRegexRewrite or authority")]
    if regex is None:
        return []
    if not regex.match or not regex.rewrite:
        missing = "match" if not regex.match else "rewrite"
        return [required_because(f"{path}.uriRegexRewrite.{missing}", "uriRegexRewrite needs both match and rewrite")]
    problem = regex_error(regex.match)
    return [invalid(f"{path}.uriRegexRewrite.match", regex.match, problem)] if problem else []


def _authority_causes(path: str, route: HTTPRoute) -> list[Cause]:
    # Rewriting the authority through `rewrite` and through header edits would race in Envoy.
    current = route.rewrite.authority if route.rewrite else None
    for value in authority_set_by(route.headers):
        if current:
            return [invalid(f"{path}.headers.request", value, f"the authority is already rewritten to {current!r}")]
        current = value
    return []
