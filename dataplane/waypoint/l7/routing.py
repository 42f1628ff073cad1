"""Route selection: Envoy's RouteConfiguration evaluated over a Request.

`RouteTable(config)` compiles a RouteConfiguration once (regexes, matchers, unpacked faults);
`RouteTable.route(request, rng)` returns a RouteDecision, or None when nothing matches (the
caller answers 404 with response flag NR). Envoy's rules:
- virtual host by the authority, case-insensitively: exact domains first, then `*suffix`
  wildcards (longest first), then `prefix*` wildcards (longest first), then `*`; within each
  tier the authority is tried as sent, then without its port (as if the connection manager
  stripped it); a wildcard stands for at least one character;
- routes in order, the first match wins: path (`prefix` — which sees the query string —, `path`,
  `safe_regex` and `path_separated_prefix` — which do not —, `case_sensitive` except for regexes),
  every `headers` matcher, every `query_parameters` matcher, `grpc`;
- the cluster: `cluster`, `cluster_header`, or `weighted_clusters` drawn with the injected
  Random (a weight-0 cluster is never picked);
- the decision carries the route's timeout (default 15 s; 0 disables it), retry policy and mirror
  policies (the route's, else the virtual host's), header modifications in Envoy's order
  (weighted cluster, route, virtual host, route configuration — reversed with
  `most_specific_header_mutations_wins`), the most specific `envoy.filters.http.fault` config
  (weighted cluster, route, virtual host), and path / host rewrites.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import any_pb2

from . import headers as header_mutations
from . import matchers
from .headers import HeaderMutation
from .model import ConfigError, Request
from .retry import NO_RETRIES, RetryRules

FAULT_FILTER = "envoy.filters.http.fault"
DEFAULT_TIMEOUT_SECONDS = 15.0
NO_ROUTE_STATUS = 404
NO_ROUTE_FLAG = "NR"  # Envoy's response flag: no route configured

_REDIRECT_CODES = {
    rc_pb2.RedirectAction.MOVED_PERMANENTLY: 301,
    rc_pb2.RedirectAction.FOUND: 302,
    rc_pb2.RedirectAction.SEE_OTHER: 303,
    rc_pb2.RedirectAction.TEMPORARY_REDIRECT: 307,
    rc_pb2.RedirectAction.PERMANENT_REDIRECT: 308,
}
_CLUSTER_NOT_FOUND = {
    rc_pb2.RouteAction.SERVICE_UNAVAILABLE: 503,
    rc_pb2.RouteAction.NOT_FOUND: 404,
    rc_pb2.RouteAction.INTERNAL_SERVER_ERROR: 500,
}


@dataclass(frozen=True, kw_only=True)
class DirectResponse:
    """A response the waypoint sends itself (direct_response, redirect, missing cluster)."""

    status: int
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class RouteDecision:
    """Where a request goes and what to do on the way. Exactly one of `cluster` and
    `direct_response` is set. `path` / `authority` are the rewritten values (None: unchanged)."""

    virtual_host: str
    route_name: str
    cluster: str | None = None
    direct_response: DirectResponse | None = None
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS
    retry: RetryRules = NO_RETRIES  # compiled once per route (retry.py)
    mirror_clusters: tuple[str, ...] = ()
    request_headers: tuple[HeaderMutation, ...] = ()
    response_headers: tuple[HeaderMutation, ...] = ()
    fault: fault_pb2.HTTPFault | None = None
    path: str | None = None
    authority: str | None = None

    def apply_request_headers(self, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The request headers to send upstream."""
        return header_mutations.apply(headers, self.request_headers)

    def apply_response_headers(self, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The response headers to send downstream."""
        return header_mutations.apply(headers, self.response_headers)


# --- matching -------------------------------------------------------------------------------------


def compile_route_match(m: rc_pb2.RouteMatch) -> Callable[[Request], bool]:
    """A RouteMatch as a predicate (also used by jwt_authn rules)."""
    parts = [_path_predicate(m)]
    parts += [matchers.header_matcher(h) for h in m.headers]
    parts += [matchers.query_parameter_matcher(q) for q in m.query_parameters]
    parts += [matchers.metadata_matcher(d) for d in m.dynamic_metadata]
    if m.HasField("grpc"):
        parts.append(lambda request: request.is_grpc)
    for unsupported in ("runtime_fraction", "tls_context"):
        if m.HasField(unsupported):
            raise ConfigError(f"RouteMatch.{unsupported} is not supported")
    if len(m.filter_state):
        raise ConfigError("RouteMatch.filter_state is not supported")
    return matchers.all_of(parts)


def _path_predicate(m: rc_pb2.RouteMatch) -> Callable[[Request], bool]:
    kind = m.WhichOneof("path_specifier")
    sensitive = m.case_sensitive.value if m.HasField("case_sensitive") else True

    def fold(value: str) -> str:
        return value if sensitive else value.lower()

    if kind == "prefix":
        prefix = fold(m.prefix)
        return lambda request: fold(request.path).startswith(prefix)
    if kind == "path":
        path = fold(m.path)
        return lambda request: fold(request.url_path) == path
    if kind == "path_separated_prefix":
        sep = fold(m.path_separated_prefix)
        return lambda request: (p := fold(request.url_path)) == sep or p.startswith(sep + "/")
    if kind == "safe_regex":
        pattern = matchers.compile_regex(m.safe_regex)
        return lambda request: pattern.fullmatch(request.url_path) is not None
    if kind == "connect_matcher":
        return lambda request: request.method == "CONNECT"
    raise ConfigError(f"RouteMatch path specifier {kind or '(none)'} is not supported")


# --- compiled configuration ----------------------------------------------------------------------


_MAX_CACHED_HOSTS = 1024


@dataclass(frozen=True)
class _Static:
    """The parts of a RouteDecision that depend on the route alone (RouteTable._static)."""

    request_headers: tuple[HeaderMutation, ...]
    response_headers: tuple[HeaderMutation, ...]
    fault: fault_pb2.HTTPFault | None
    retry: RetryRules
    timeout: float | None
    mirrors: tuple[rc_pb2.RouteAction.RequestMirrorPolicy, ...]
    authority: str | None


@dataclass(frozen=True)
class _WeightedCluster:
    name: str
    weight: int
    request_headers: HeaderMutation
    response_headers: HeaderMutation
    fault: fault_pb2.HTTPFault | None
    host_rewrite: str | None


@dataclass
class _Route:
    name: str
    match: Callable[[Request], bool]
    proto: rc_pb2.Route
    request_headers: HeaderMutation
    response_headers: HeaderMutation
    fault: fault_pb2.HTTPFault | None
    weighted: list[_WeightedCluster] = field(default_factory=list)
    regex_rewrite: tuple[re.Pattern[str], str] | None = None


@dataclass
class _VirtualHost:
    name: str
    domains: list[str]
    routes: list[_Route]
    proto: rc_pb2.VirtualHost
    request_headers: HeaderMutation
    response_headers: HeaderMutation
    fault: fault_pb2.HTTPFault | None


def fault_config(typed_per_filter_config: Mapping[str, any_pb2.Any]) -> fault_pb2.HTTPFault | None:
    """The HTTPFault in a `typed_per_filter_config` map (bare, or wrapped in a FilterConfig)."""
    if FAULT_FILTER not in typed_per_filter_config:
        return None
    packed = typed_per_filter_config[FAULT_FILTER]
    if packed.Is(rc_pb2.FilterConfig.DESCRIPTOR):
        wrapper = rc_pb2.FilterConfig()
        packed.Unpack(wrapper)
        if wrapper.disabled:
            return None
        packed = wrapper.config
    fault = fault_pb2.HTTPFault()
    if not packed.Unpack(fault):
        raise ConfigError(f"typed_per_filter_config[{FAULT_FILTER}] is {packed.type_url}, not HTTPFault")
    return fault


class RouteTable:
    """One compiled RouteConfiguration. Immutable: build a new one when the resource changes."""

    def __init__(self, config: route_pb2.RouteConfiguration):
        self.name = config.name
        self._most_specific_wins = config.most_specific_header_mutations_wins
        self._ignore_port = config.ignore_port_in_host_matching
        self._request_headers = HeaderMutation.from_proto(
            config.request_headers_to_add, config.request_headers_to_remove
        )
        self._response_headers = HeaderMutation.from_proto(
            config.response_headers_to_add, config.response_headers_to_remove
        )
        self._virtual_hosts = [self._compile_vhost(v) for v in config.virtual_hosts]
        # Per-request work kept out of the hot path: the virtual host of an authority, and what a
        # decision takes from the route's messages alone (header mutations, fault, retry policy,
        # timeout, mirror policies, host rewrite), by (virtual host, route, weighted cluster).
        self._hosts: dict[str, _VirtualHost | None] = {}
        self._statics: dict[tuple[int, int, int], _Static] = {}

    def route(self, request: Request, rng: random.Random) -> RouteDecision | None:
        """The decision for a request, or None when no virtual host or route matches it."""
        authority = request.authority
        try:
            vhost = self._hosts[authority]
        except KeyError:
            vhost = self.virtual_host(authority)
            if len(self._hosts) >= _MAX_CACHED_HOSTS:  # authorities come from clients: bound it
                self._hosts.clear()
            self._hosts[authority] = vhost
        if vhost is None:
            return None
        route = next((r for r in vhost.routes if r.match(request)), None)
        if route is None:
            return None
        return self._decide(request, vhost, route, rng)

    def virtual_host(self, authority: str) -> _VirtualHost | None:
        """The virtual host serving an authority (see the module docstring for the order)."""
        host = authority.lower()
        stripped = _strip_port(host)
        candidates = [stripped] if self._ignore_port else list(dict.fromkeys([host, stripped]))
        for tier in (self._exact, self._suffix, self._prefix):
            for candidate in candidates:
                found = tier(candidate)
                if found is not None:
                    return found
        return next((v for v in self._virtual_hosts if "*" in v.domains), None)

    def _exact(self, host: str) -> _VirtualHost | None:
        return next((v for v in self._virtual_hosts if host in v.domains), None)

    def _suffix(self, host: str) -> _VirtualHost | None:
        return self._longest_wildcard(host, lambda d: d.startswith("*") and host.endswith(d[1:]))

    def _prefix(self, host: str) -> _VirtualHost | None:
        return self._longest_wildcard(host, lambda d: d.endswith("*") and host.startswith(d[:-1]))

    def _longest_wildcard(self, host: str, fits: Callable[[str], bool]) -> _VirtualHost | None:
        # The wildcard must stand for at least one character, and the longest domain wins.
        best: tuple[int, _VirtualHost] | None = None
        for v in self._virtual_hosts:
            for d in v.domains:
                if d != "*" and len(host) >= len(d) and fits(d) and (best is None or len(d) > best[0]):
                    best = (len(d), v)
        return best[1] if best else None

    # --- compiling ------------------------------------------------------------------------------

    def _compile_vhost(self, v: rc_pb2.VirtualHost) -> _VirtualHost:
        if v.HasField("matcher"):
            raise ConfigError(f"virtual host {v.name}: the `matcher` form is not supported")
        return _VirtualHost(
            name=v.name,
            domains=[d.lower() for d in v.domains],
            routes=[_compile_route(v.name, i, r) for i, r in enumerate(v.routes)],
            proto=v,
            request_headers=HeaderMutation.from_proto(v.request_headers_to_add, v.request_headers_to_remove),
            response_headers=HeaderMutation.from_proto(v.response_headers_to_add, v.response_headers_to_remove),
            fault=fault_config(v.typed_per_filter_config),
        )

    # --- deciding -------------------------------------------------------------------------------

    def _decide(self, request: Request, vhost: _VirtualHost, route: _Route, rng: random.Random) -> RouteDecision:
        picked = None
        base = dict(virtual_host=vhost.name, route_name=route.name)
        if route.proto.HasField("direct_response"):
            return self._finish(request, vhost, route, None, rng, base, direct=_direct(route.proto.direct_response))
        if route.proto.HasField("redirect"):
            return self._finish(request, vhost, route, None, rng, base, direct=_redirect(request, route.proto))
        action = route.proto.route
        kind = action.WhichOneof("cluster_specifier")
        if kind == "cluster":
            cluster = action.cluster
        elif kind == "cluster_header":
            cluster = request.header(action.cluster_header)
            if not cluster:
                status = _CLUSTER_NOT_FOUND.get(action.cluster_not_found_response_code, 503)
                return self._finish(request, vhost, route, None, rng, base, direct=DirectResponse(status=status))
        else:
            picked = _pick_weighted(route.weighted, rng)
            cluster = picked.name
        return self._finish(request, vhost, route, picked, rng, {**base, "cluster": cluster})

    def _finish(
        self,
        request: Request,
        vhost: _VirtualHost,
        route: _Route,
        picked: _WeightedCluster | None,
        rng: random.Random,
        base: dict[str, object],
        direct: DirectResponse | None = None,
    ) -> RouteDecision:
        key = (id(vhost), id(route), id(picked))
        static = self._statics.get(key)
        if static is None:
            static = self._statics[key] = self._static(vhost, route, picked)
        forwarding = direct is None
        return RouteDecision(
            **base,  # type: ignore[arg-type]
            direct_response=direct,
            timeout=static.timeout if forwarding else None,
            retry=static.retry if forwarding else NO_RETRIES,
            mirror_clusters=tuple(_sampled_mirrors(static.mirrors, request, rng))
            if forwarding and static.mirrors
            else (),
            request_headers=static.request_headers,
            response_headers=static.response_headers,
            fault=static.fault,
            path=_rewrite_path(request, route) if forwarding else None,
            authority=static.authority,
        )

    def _static(self, vhost: _VirtualHost, route: _Route, picked: _WeightedCluster | None) -> _Static:
        """What a decision takes from the messages alone (the same for every request)."""
        action = route.proto.route
        req_levels = [picked.request_headers if picked else None, route.request_headers, vhost.request_headers]
        resp_levels = [picked.response_headers if picked else None, route.response_headers, vhost.response_headers]
        req = [m for m in [*req_levels, self._request_headers] if m]
        resp = [m for m in [*resp_levels, self._response_headers] if m]
        if self._most_specific_wins:
            req.reverse()
            resp.reverse()
        fault = next((f for f in (picked.fault if picked else None, route.fault, vhost.fault) if f is not None), None)
        retry = action.retry_policy if action.HasField("retry_policy") else None
        if retry is None and vhost.proto.HasField("retry_policy"):
            retry = vhost.proto.retry_policy
        return _Static(
            request_headers=tuple(req),
            response_headers=tuple(resp),
            fault=fault,
            retry=RetryRules.from_proto(retry),
            timeout=_timeout(action),
            mirrors=tuple(action.request_mirror_policies or vhost.proto.request_mirror_policies),
            authority=(picked.host_rewrite if picked and picked.host_rewrite else None)
            or action.host_rewrite_literal
            or None,
        )


def _compile_route(vhost: str, index: int, r: rc_pb2.Route) -> _Route:
    name = r.name or f"{vhost}/{index}"
    kind = r.WhichOneof("action")
    if kind not in ("route", "redirect", "direct_response"):
        raise ConfigError(f"route {name}: action {kind or '(none)'} is not supported")
    compiled = _Route(
        name=name,
        match=compile_route_match(r.match),
        proto=r,
        request_headers=HeaderMutation.from_proto(r.request_headers_to_add, r.request_headers_to_remove),
        response_headers=HeaderMutation.from_proto(r.response_headers_to_add, r.response_headers_to_remove),
        fault=fault_config(r.typed_per_filter_config),
    )
    if kind != "route":
        return compiled
    action = r.route
    specifier = action.WhichOneof("cluster_specifier")
    if specifier not in ("cluster", "cluster_header", "weighted_clusters"):
        raise ConfigError(f"route {name}: cluster specifier {specifier or '(none)'} is not supported")
    if specifier == "weighted_clusters":
        compiled.weighted = [_compile_weighted(name, c) for c in action.weighted_clusters.clusters]
        if sum(c.weight for c in compiled.weighted) <= 0:
            raise ConfigError(f"route {name}: weighted_clusters have no weight")
    if action.HasField("regex_rewrite"):
        compiled.regex_rewrite = (
            matchers.compile_regex(action.regex_rewrite.pattern),
            action.regex_rewrite.substitution,
        )
    return compiled


def _compile_weighted(route: str, c: rc_pb2.WeightedCluster.ClusterWeight) -> _WeightedCluster:
    if not c.name:
        raise ConfigError(f"route {route}: a weighted cluster without a name (cluster_header) is not supported")
    return _WeightedCluster(
        name=c.name,
        weight=c.weight.value,
        request_headers=HeaderMutation.from_proto(c.request_headers_to_add, c.request_headers_to_remove),
        response_headers=HeaderMutation.from_proto(c.response_headers_to_add, c.response_headers_to_remove),
        fault=fault_config(c.typed_per_filter_config),
        host_rewrite=c.host_rewrite_literal or None,
    )


def _pick_weighted(clusters: list[_WeightedCluster], rng: random.Random) -> _WeightedCluster:
    """Envoy's draw: a number below the total weight, then the cluster whose cumulative range
    holds it."""
    draw = rng.randrange(sum(c.weight for c in clusters))
    for c in clusters:
        if draw < c.weight:
            return c
        draw -= c.weight
    raise AssertionError("unreachable: the draw is below the total weight")


def _timeout(action: rc_pb2.RouteAction) -> float | None:
    if not action.HasField("timeout"):
        return DEFAULT_TIMEOUT_SECONDS
    seconds = action.timeout.ToTimedelta().total_seconds()
    return seconds or None  # 0 disables the timeout


def _sampled_mirrors(
    policies: Sequence[rc_pb2.RouteAction.RequestMirrorPolicy], request: Request, rng: random.Random
) -> list[str]:
    chosen = []
    for policy in policies:
        cluster = policy.cluster or (request.header(policy.cluster_header) if policy.cluster_header else None)
        if not cluster:
            continue
        if policy.HasField("runtime_fraction") and not matchers.sampled(policy.runtime_fraction.default_value, rng):
            continue
        chosen.append(cluster)
    return chosen


def _rewrite_path(request: Request, route: _Route) -> str | None:
    action = route.proto.route
    if route.regex_rewrite is not None:
        pattern, substitution = route.regex_rewrite
        path, sep, query = request.path.partition("?")
        return pattern.sub(_re2_substitution(substitution), path) + sep + query
    if not action.prefix_rewrite:
        return None
    match = route.proto.match
    kind = match.WhichOneof("path_specifier")
    matched = {"prefix": match.prefix, "path": match.path, "path_separated_prefix": match.path_separated_prefix}.get(
        kind or ""
    )
    if matched is None:
        return None
    return action.prefix_rewrite + request.path[len(matched) :]


def _re2_substitution(substitution: str) -> str:
    # RE2 writes group references as \1; Python's re.sub reads the same syntax, but a lone
    # backslash before a non-digit must stay literal.
    return re.sub(r"\\(?!\d)", r"\\\\", substitution)


def _direct(d: rc_pb2.DirectResponseAction) -> DirectResponse:
    body = (d.body.inline_string or d.body.inline_bytes.decode("utf-8", "replace")) if d.HasField("body") else ""
    return DirectResponse(status=d.status, body=body)


def _redirect(request: Request, route: rc_pb2.Route) -> DirectResponse:
    r = route.redirect
    scheme = "https" if r.https_redirect else (r.scheme_redirect or request.scheme)
    host = r.host_redirect or _strip_port(request.authority)
    # A scheme change drops the old port (it belonged to the old scheme) unless one is given.
    port = r.port_redirect or (_port_of(request.authority) if scheme == request.scheme else None)
    if port and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    path, sep, query = request.path.partition("?")
    kind = r.WhichOneof("path_rewrite_specifier")
    if kind == "path_redirect":
        path = r.path_redirect
    elif kind == "prefix_rewrite":
        matched = route.match.prefix or route.match.path_separated_prefix or route.match.path
        path = r.prefix_rewrite + path[len(matched) :]
    elif kind == "regex_rewrite":
        path = matchers.compile_regex(r.regex_rewrite.pattern).sub(
            _re2_substitution(r.regex_rewrite.substitution), path
        )
    location = f"{scheme}://{host}{path}" + ("" if r.strip_query or not sep else f"?{query}")
    return DirectResponse(status=_REDIRECT_CODES[r.response_code], headers=(("location", location),))


def _strip_port(authority: str) -> str:
    if authority.startswith("["):  # [v6]:port
        return authority.split("]", 1)[0] + "]"
    host, sep, port = authority.rpartition(":")
    return host if sep and port.isdigit() else authority


def _port_of(authority: str) -> int | None:
    stripped = _strip_port(authority)
    rest = authority[len(stripped) + 1 :]
    return int(rest) if rest.isdigit() else None
