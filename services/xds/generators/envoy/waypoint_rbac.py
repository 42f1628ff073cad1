"""AuthorizationPolicies enforced by a waypoint → Envoy RBAC HTTP filters (DENY, then ALLOW).

Follows Istio's authorization builder (istio/istio: pilot/pkg/security/authz/builder, model;
reference istio-ambient-protocols "Authorization") in the shapes docs/waypoint.md fixes:
- ALLOW and DENY policies are translated; AUDIT has no effect on traffic and CUSTOM needs an
  external authorizer the waypoint does not have: neither is translated (waypoint_policy.py says
  so in the policy's WaypointAccepted condition);
- one Envoy policy per rule, named `{ns}.{policy}` (with `.{i}` appended, i the rule's index,
  when the policy has several rules); a policy without rules yields no Envoy policy, so an
  ALLOW policy without rules still creates the ALLOW filter, whose empty policy map denies
  everything (Istio's allow-nothing), and a DENY policy without rules denies nothing;
- a rule matches when one of its `from` sources, one of its `to` operations and every `when`
  condition match; within a source or operation every field must match, and any value of a
  field; `not*` fields are `not_id` / `not_rule` of the values;
- `to` fields and the `when` keys about the destination are permissions; `from` fields and the
  `when` keys about the source and the request's identity are principals.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2
from google.protobuf import wrappers_pb2

from services.xds.generators.view import meta

from .resources import pack

Json = dict[str, Any]

RBAC_FILTER = "envoy.filters.http.rbac"
JWT_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD = "payload"  # where jwt_authn keeps a verified token's claims (payload_in_metadata)
TRANSLATED_ACTIONS = ("ALLOW", "DENY")

_ANY_PERMISSION = rbac.Permission(any=True)
_ANY_PRINCIPAL = rbac.Principal(any=True)
_NOTHING = rbac.Principal(not_id=rbac.Principal(any=True))  # a condition the waypoint cannot read
_CLAIM = re.compile(r"^request\.auth\.claims((?:\[[^\]]+\])+)$")
_HEADER = re.compile(r"^request\.headers\[([^\]]+)\]$")


# --- string forms -------------------------------------------------------------------------------


def glob(value: str, ignore_case: bool = False) -> string_pb2.StringMatcher:
    """Istio's string match: `*` alone is any value, `x*` a prefix, `*x` a suffix, else exact."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"), ignore_case=ignore_case)
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=value[:-1], ignore_case=ignore_case)
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=value, ignore_case=ignore_case)


def _principal_name(value: str) -> string_pb2.StringMatcher:
    """A source principal (`ns/foo/sa/bar`, `*`, `prefix*`, `*suffix`) against the peer's SPIFFE
    URI; a value already written as `spiffe://…` is taken without the scheme."""
    value = value.removeprefix("spiffe://")
    if value == "*":
        return string_pb2.StringMatcher(prefix="spiffe://")
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:])
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix="spiffe://" + value[:-1])
    return string_pb2.StringMatcher(exact="spiffe://" + value)


def _namespace_regex(namespace: str) -> string_pb2.StringMatcher:
    pattern = re.escape(namespace).replace(r"\*", "[^/]*")
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=f"spiffe://[^/]+/ns/{pattern}/sa/.*"))


def _authenticated(matcher: string_pb2.StringMatcher) -> rbac.Principal:
    return rbac.Principal(authenticated=rbac.Principal.Authenticated(principal_name=matcher))


def _claim(path: list[str], value: str) -> rbac.Principal:
    """A claim of the verified token equals (or, for a list claim, holds) `value`."""
    keys = [metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in [PAYLOAD, *path]]
    string = value_pb2.ValueMatcher(string_match=glob(value))
    listed = value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=string))
    return _any_of(
        [
            rbac.Principal(metadata=metadata_pb2.MetadataMatcher(filter=JWT_FILTER, path=keys, value=v))
            for v in (string, listed)
        ]
    )


def _request_principal(value: str) -> rbac.Principal:
    """`iss/sub` as the token's issuer and subject (split at the last `/`: issuers are URLs)."""
    if value == "*":
        return _claim(["iss"], "*")
    issuer, _, subject = value.rpartition("/")
    if not issuer:
        return _claim(["iss"], value) if value.endswith("*") else _claim(["sub"], value)
    return rbac.Principal(and_ids=rbac.Principal.Set(ids=[_claim(["iss"], issuer), _claim(["sub"], subject)]))


def _cidr(value: str) -> address_pb2.CidrRange:
    ip, _, length = value.partition("/")
    default = 128 if ":" in ip else 32
    prefix = wrappers_pb2.UInt32Value(value=int(length) if length else default)
    return address_pb2.CidrRange(address_prefix=ip, prefix_len=prefix)


def _header(name: str, matcher: string_pb2.StringMatcher) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(name=name, string_match=matcher)


# --- combinators ----------------------------------------------------------------------------------


def _any_of(ids: list[rbac.Principal]) -> rbac.Principal:
    return ids[0] if len(ids) == 1 else rbac.Principal(or_ids=rbac.Principal.Set(ids=ids))


def _all_of(ids: list[rbac.Principal]) -> rbac.Principal:
    if not ids:
        return _ANY_PRINCIPAL
    return ids[0] if len(ids) == 1 else rbac.Principal(and_ids=rbac.Principal.Set(ids=ids))


def _any_rule(rules: list[rbac.Permission]) -> rbac.Permission:
    return rules[0] if len(rules) == 1 else rbac.Permission(or_rules=rbac.Permission.Set(rules=rules))


def _all_rules(rules: list[rbac.Permission]) -> rbac.Permission:
    if not rules:
        return _ANY_PERMISSION
    return rules[0] if len(rules) == 1 else rbac.Permission(and_rules=rbac.Permission.Set(rules=rules))


# --- fields ---------------------------------------------------------------------------------------

# Operation fields → one Permission per value.
_OPERATION = {
    "methods": lambda v: rbac.Permission(header=_header(":method", string_pb2.StringMatcher(exact=v))),
    "paths": lambda v: rbac.Permission(url_path=path_pb2.PathMatcher(path=glob(v))),
    "hosts": lambda v: rbac.Permission(header=_header(":authority", glob(v, ignore_case=True))),
    "ports": lambda v: rbac.Permission(destination_port=int(v)),
}
# Source fields → one Principal per value.
_SOURCE = {
    "principals": lambda v: _authenticated(_principal_name(v)),
    "namespaces": lambda v: _authenticated(_namespace_regex(v)),
    "requestPrincipals": _request_principal,
    "ipBlocks": lambda v: rbac.Principal(direct_remote_ip=_cidr(v)),
    "remoteIpBlocks": lambda v: rbac.Principal(remote_ip=_cidr(v)),
}
# `when` keys about the destination (permissions); the others are principals.
_WHEN_PERMISSION = {
    "destination.port": _OPERATION["ports"],
    "destination.ip": lambda v: rbac.Permission(destination_ip=_cidr(v)),
    "connection.sni": lambda v: rbac.Permission(requested_server_name=glob(v)),
}
_WHEN_PRINCIPAL = {
    "source.ip": _SOURCE["ipBlocks"],
    "remote.ip": _SOURCE["remoteIpBlocks"],
    "source.namespace": _SOURCE["namespaces"],
    "source.principal": _SOURCE["principals"],
    "request.auth.principal": _request_principal,
    "request.auth.audiences": lambda v: _claim(["aud"], v),
    "request.auth.presenter": lambda v: _claim(["azp"], v),
}


def _operation(op: Json) -> rbac.Permission:
    parts: list[rbac.Permission] = []
    for name, make in _OPERATION.items():
        if op.get(name):
            parts.append(_any_rule([make(v) for v in op[name]]))
        negative = "not" + name[0].upper() + name[1:]
        if op.get(negative):
            parts.append(rbac.Permission(not_rule=_any_rule([make(v) for v in op[negative]])))
    return _all_rules(parts)


def _source(src: Json) -> rbac.Principal:
    parts: list[rbac.Principal] = []
    for name, make in _SOURCE.items():
        if src.get(name):
            parts.append(_any_of([make(v) for v in src[name]]))
        negative = "not" + name[0].upper() + name[1:]
        if src.get(negative):
            parts.append(rbac.Principal(not_id=_any_of([make(v) for v in src[negative]])))
    return _all_of(parts)


def _when_principal(key: str) -> Any:
    if key in _WHEN_PRINCIPAL:
        return _WHEN_PRINCIPAL[key]
    if claim := _CLAIM.match(key):
        path = re.findall(r"\[([^\]]+)\]", claim.group(1))
        return lambda v: _claim(path, v)
    if header := _HEADER.match(key):
        name = header.group(1).lower()
        return lambda v: rbac.Principal(header=_header(name, glob(v)))
    return None


def _when(conditions: Iterable[Json]) -> tuple[list[rbac.Permission], list[rbac.Principal]]:
    permissions: list[rbac.Permission] = []
    principals: list[rbac.Principal] = []
    for condition in conditions:
        key = condition.get("key") or ""
        values, negatives = condition.get("values") or [], condition.get("notValues") or []
        if key in _WHEN_PERMISSION:
            make = _WHEN_PERMISSION[key]
            if values:
                permissions.append(_any_rule([make(v) for v in values]))
            if negatives:
                permissions.append(rbac.Permission(not_rule=_any_rule([make(v) for v in negatives])))
            continue
        make_principal = _when_principal(key)
        if make_principal is None:
            principals.append(_NOTHING)  # istiod validates keys; an unknown one never matches
            continue
        if values:
            principals.append(_any_of([make_principal(v) for v in values]))
        if negatives:
            principals.append(rbac.Principal(not_id=_any_of([make_principal(v) for v in negatives])))
    return permissions, principals


def rule_policy(rule: Json) -> rbac.Policy:
    """One rule: any `to` (each AND-ed with the destination `when`s), any `from` (each AND-ed
    with the source `when`s)."""
    when_permissions, when_principals = _when(rule.get("when") or [])
    operations = [(t or {}).get("operation") or {} for t in rule.get("to") or []]
    sources = [(f or {}).get("source") or {} for f in rule.get("from") or []]
    permissions = [_all_rules([_operation(op), *when_permissions]) for op in operations] or [
        _all_rules(when_permissions)
    ]
    principals = [_all_of([_source(src), *when_principals]) for src in sources] or [_all_of(when_principals)]
    return rbac.Policy(permissions=permissions, principals=principals)


def policy_entries(ap: Json) -> dict[str, rbac.Policy]:
    """The Envoy policies of one AuthorizationPolicy, by name."""
    rules = (ap.get("spec") or {}).get("rules") or []
    base = f"{meta(ap).get('namespace', '')}.{meta(ap)['name']}"
    if len(rules) == 1:
        return {base: rule_policy(rules[0] or {})}
    return {f"{base}.{i}": rule_policy(rule or {}) for i, rule in enumerate(rules)}


def rbac_filters(policies: Iterable[Json]) -> list[hcm.HttpFilter]:
    """The RBAC HTTP filters for the policies that apply to one filter chain: DENY (when a DENY
    policy applies), then ALLOW (when an ALLOW policy applies), as HttpConnectionManager filters."""
    by_action: dict[str, dict[str, rbac.Policy]] = {}
    for ap in policies:
        action = (ap.get("spec") or {}).get("action") or "ALLOW"
        if action in TRANSLATED_ACTIONS:
            by_action.setdefault(action, {}).update(policy_entries(ap))
    out = []
    for action in ("DENY", "ALLOW"):
        if action not in by_action:
            continue
        rules = rbac.RBAC(action=getattr(rbac.RBAC, action), policies=dict(sorted(by_action[action].items())))
        out.append(hcm.HttpFilter(name=RBAC_FILTER, typed_config=pack(rbac_filter.RBAC(rules=rules))))
    return out
