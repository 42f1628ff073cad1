"""L7 authorization: Envoy's RBAC HTTP filter (`envoy.filters.http.rbac`) over a Request.

The listener carries a DENY filter then an ALLOW filter (docs/waypoint.md); each is evaluated in
order and the first that refuses decides. Envoy's rules (rbac filter and rbac.v3 docs):
- a filter without `rules` enforces nothing;
- a policy matches when one of its permissions AND one of its principals match;
- ALLOW allows only when some policy matches (so ALLOW with no policies denies everything);
  DENY denies when some policy matches; LOG always allows and only records the match;
- `shadow_rules` are evaluated the same way but never enforced: their verdict is reported
  beside the real one, for the access log ("shadow_effective_policy_id", "shadow_engine_result");
- policies are tried in name order (Envoy keeps them in a sorted map), so the policy a decision
  names is deterministic.

Fields this engine cannot honour (CEL conditions, the generic `matcher` trees, custom
principals, filter state) raise ConfigError at construction, so the waypoint NACKs instead of
enforcing less than asked.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import path_pb2

from . import matchers
from .model import ConfigError, Request

RBAC_FILTER = "envoy.filters.http.rbac"
DENIED_STATUS = 403
DENIED_BODY = "RBAC: access denied"
RESPONSE_FLAG = "RBAC"  # Envoy's %RESPONSE_FLAGS% for a request the RBAC filter refused

Predicate = Callable[[Request], bool]


class Action(enum.Enum):
    """A policy set's action (rbac.v3 RBAC.Action)."""

    ALLOW = rbac_pb2.RBAC.ALLOW
    DENY = rbac_pb2.RBAC.DENY
    LOG = rbac_pb2.RBAC.LOG


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """One policy set's verdict: whether it allows the request, its action, and the policy that
    matched (None when none did)."""

    allowed: bool
    action: Action
    policy: str | None


@dataclass(frozen=True, kw_only=True)
class RbacDecision:
    """The verdict of the whole chain of RBAC filters.

    `allowed` is what is enforced; `action` / `policy` / `filter_index` name the filter and
    policy that decided (for a refusal: the DENY policy that matched, or the ALLOW filter with
    `policy` None because nothing matched; for an allowed request: the last ALLOW filter's
    matching policy, if any). `shadow` holds each filter's shadow verdict, log-only.
    """

    allowed: bool
    action: Action | None = None
    policy: str | None = None
    filter_index: int | None = None
    shadow: tuple[Verdict, ...] = ()

    @property
    def log_reason(self) -> str:
        """What Envoy's access log says for a refusal (%RESPONSE_CODE_DETAILS%)."""
        if self.allowed:
            return "via_upstream"
        matched = self.policy if self.action is Action.DENY else "none"
        return f"rbac_access_denied_matched_policy[{matched}]"


class PolicySet:
    """One compiled `rbac.v3.RBAC` (an action and named policies)."""

    def __init__(self, rules: rbac_pb2.RBAC):
        self.action = Action(rules.action)
        self._policies: list[tuple[str, Predicate]] = [
            (name, _policy(name, rules.policies[name])) for name in sorted(rules.policies)
        ]

    def matching_policy(self, request: Request) -> str | None:
        """The first policy (by name) whose permissions and principals match, or None."""
        return next((name for name, matches in self._policies if matches(request)), None)

    def evaluate(self, request: Request) -> Verdict:
        """This policy set's verdict on the request."""
        policy = self.matching_policy(request)
        if self.action is Action.ALLOW:
            allowed = policy is not None
        elif self.action is Action.DENY:
            allowed = policy is None
        else:
            allowed = True
        return Verdict(allowed=allowed, action=self.action, policy=policy)


class RbacFilter:
    """One `envoy.filters.http.rbac` filter: enforced rules and log-only shadow rules."""

    def __init__(self, config: http_rbac_pb2.RBAC):
        if config.HasField("matcher") or config.HasField("shadow_matcher"):
            raise ConfigError("RBAC: the `matcher` form is not supported; use `rules`")
        self.rules = PolicySet(config.rules) if config.HasField("rules") else None
        self.shadow_rules = PolicySet(config.shadow_rules) if config.HasField("shadow_rules") else None

    def evaluate(self, request: Request) -> tuple[Verdict | None, Verdict | None]:
        """(enforced verdict, shadow verdict); either is None when that rule set is absent."""
        enforced = self.rules.evaluate(request) if self.rules else None
        shadow = self.shadow_rules.evaluate(request) if self.shadow_rules else None
        return enforced, shadow


class RbacEngine:
    """The RBAC filters of one filter chain, in listener order. Immutable once built; build a
    new one when the Listener changes."""

    def __init__(self, configs: Iterable[http_rbac_pb2.RBAC]):
        self.filters = [RbacFilter(c) for c in configs]

    @classmethod
    def from_http_filters(cls, http_filters: Iterable[hcm_pb2.HttpFilter]) -> RbacEngine:
        """The engine for the RBAC filters among an HttpConnectionManager's `http_filters`."""
        configs = []
        for f in http_filters:
            if f.name == RBAC_FILTER and not f.disabled:
                config = http_rbac_pb2.RBAC()
                if not f.typed_config.Unpack(config):
                    raise ConfigError(f"{RBAC_FILTER}: typed_config is {f.typed_config.type_url}")
                configs.append(config)
        return cls(configs)

    def evaluate(self, request: Request) -> RbacDecision:
        """Run every filter in order; the first refusal decides (later filters do not run, so
        their shadow rules are not reported either — as in Envoy, where the chain stops)."""
        shadows: list[Verdict] = []
        last: tuple[Verdict, int] | None = None
        for index, rbac_filter in enumerate(self.filters):
            enforced, shadow = rbac_filter.evaluate(request)
            if shadow is not None:
                shadows.append(shadow)
            if enforced is None:
                continue
            if not enforced.allowed:
                return RbacDecision(
                    allowed=False,
                    action=enforced.action,
                    policy=enforced.policy,
                    filter_index=index,
                    shadow=tuple(shadows),
                )
            last = (enforced, index)
        if last is None:
            return RbacDecision(allowed=True, shadow=tuple(shadows))
        verdict, index = last
        return RbacDecision(
            allowed=True, action=verdict.action, policy=verdict.policy, filter_index=index, shadow=tuple(shadows)
        )


def evaluate(configs: Sequence[http_rbac_pb2.RBAC], request: Request) -> RbacDecision:
    """One-shot evaluation (compiles the configs each call; keep an RbacEngine for traffic)."""
    return RbacEngine(configs).evaluate(request)


# --- compiling policies ----------------------------------------------------------------------------


def _policy(name: str, policy: rbac_pb2.Policy) -> Predicate:
    if policy.HasField("condition") or policy.HasField("checked_condition"):
        raise ConfigError(f"RBAC policy {name}: CEL conditions are not supported")
    permission = matchers.any_of([_permission(p) for p in policy.permissions])
    principal = matchers.any_of([_principal(p) for p in policy.principals])
    return lambda request: permission(request) and principal(request)


def _path_matcher(m: path_pb2.PathMatcher) -> Predicate:
    # PathMatcher sees the path without its query string (Envoy strips query and fragment).
    test = matchers.string_matcher(m.path)
    return lambda request: test(request.url_path)


def _permission(p: rbac_pb2.Permission) -> Predicate:
    kind = p.WhichOneof("rule")
    if kind == "any":
        return lambda request: p.any
    if kind == "and_rules":
        return matchers.all_of([_permission(r) for r in p.and_rules.rules])
    if kind == "or_rules":
        return matchers.any_of([_permission(r) for r in p.or_rules.rules])
    if kind == "not_rule":
        inner = _permission(p.not_rule)
        return lambda request: not inner(request)
    if kind == "header":
        return matchers.header_matcher(p.header)
    if kind == "url_path":
        return _path_matcher(p.url_path)
    if kind == "destination_port":
        port = p.destination_port
        return lambda request: request.destination_port == port
    if kind == "destination_port_range":
        start, end = p.destination_port_range.start, p.destination_port_range.end
        return lambda request: start <= request.destination_port < end
    if kind == "destination_ip":
        cidr = matchers.cidr_matcher(p.destination_ip)
        return lambda request: cidr(request.destination_ip)
    if kind == "metadata":
        return matchers.metadata_matcher(p.metadata)
    if kind == "requested_server_name":
        # Requests reach the waypoint inside an HBONE tunnel: there is no SNI to compare.
        sni = matchers.string_matcher(p.requested_server_name)
        return lambda request: sni("")
    raise ConfigError(f"RBAC permission {kind or '(empty)'} is not supported")


def _principal(p: rbac_pb2.Principal) -> Predicate:
    kind = p.WhichOneof("identifier")
    if kind == "any":
        return lambda request: p.any
    if kind == "and_ids":
        return matchers.all_of([_principal(i) for i in p.and_ids.ids])
    if kind == "or_ids":
        return matchers.any_of([_principal(i) for i in p.or_ids.ids])
    if kind == "not_id":
        inner = _principal(p.not_id)
        return lambda request: not inner(request)
    if kind == "authenticated":
        return _authenticated(p.authenticated)
    if kind in ("direct_remote_ip", "remote_ip", "source_ip"):
        # The waypoint does not trust X-Forwarded-For, so the remote address is the direct one.
        cidr = matchers.cidr_matcher(getattr(p, kind))
        return lambda request: cidr(request.source_ip)
    if kind == "header":
        return matchers.header_matcher(p.header)
    if kind == "url_path":
        return _path_matcher(p.url_path)
    if kind == "metadata":
        return matchers.metadata_matcher(p.metadata)
    raise ConfigError(f"RBAC principal {kind or '(empty)'} is not supported")


def _authenticated(a: rbac_pb2.Principal.Authenticated) -> Predicate:
    # Without principal_name any peer with a certificate matches; with it, the peer's URI SAN
    # (the SPIFFE identity) is compared. A plaintext peer never matches.
    if not a.HasField("principal_name"):
        return lambda request: request.source_principal is not None
    test = matchers.string_matcher(a.principal_name)
    return lambda request: request.source_principal is not None and test(request.source_principal)
