"""AuthorizationPolicy → ztunnel Authorization, with Istio's L4 rules and its ZtunnelAccepted status.

Follows istio/istio: pilot/pkg/serviceregistry/ambient/authorization.go (convertAuthorizationPolicy,
handleRule; reference §3, features §E):
- a policy with `targetRef(s)` belongs to the waypoint it targets: nothing for ztunnel, and no
  ZtunnelAccepted condition (its WaypointAccepted condition is waypoint_policy.py's);
- scope: WORKLOAD_SELECTOR with a `selector`, else NAMESPACE, or GLOBAL in the root namespace;
- ALLOW and DENY are translated; AUDIT and CUSTOM are not supported by ztunnel (no resource);
- a rule becomes a Group whose Rules (clauses) are AND-ed: its `to` operations, its `from`
  sources, then one clause per `when` condition, the entries of one clause OR-ed;
- HTTP-only attributes (requestPrincipals, remoteIpBlocks, hosts, methods, paths, their not* forms,
  any `when` key beyond the five L4 ones): in an ALLOW policy the whole rule is dropped (so a
  policy whose every rule had one allows nothing: it fails closed); in a DENY policy they are
  stripped and the L4 parts kept.

On the wire Istio keeps the stripped entries as empty matches, which ztunnel skips (an empty match
never matches, so a clause made only of them fails and its rule never fires). Here the empty
matches are left out and a rule that could never fire is left out too: ztunnel evaluates the result
exactly as it evaluates Istio's, and what is sent reads as what is enforced.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mesh.proto_gen.istio.security import authorization_pb2 as authz
from services.xds.model import AUTHORIZATION_POLICIES, ROOT_NAMESPACE

from .view import ConfigView, meta, selects

Json = dict[str, Any]

ZTUNNEL_ACCEPTED = "ZtunnelAccepted"
ACCEPTED_MESSAGE = "attached to ztunnel"

_HTTP_RULE = "ztunnel does not support HTTP attributes (found: {}). In ambient mode you must use a waypoint proxy to enforce HTTP rules. {}"  # noqa: E501
_ALLOW_BOILERPLATE = (
    "Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested."
)
_DENY_BOILERPLATE = (
    "DENY policy with HTTP attributes is enforced without the HTTP rules. This will be more restrictive than requested."
)
_DENY_NO_EFFECT = (
    "Within a DENY policy, a rule with a from, to or when clause made only of HTTP attributes "
    "is skipped: it will have no effect."
)

_HTTP_OPERATION_FIELDS = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")
_HTTP_SOURCE_FIELDS = ("remoteIpBlocks", "notRemoteIpBlocks", "requestPrincipals", "notRequestPrincipals")
# `when` keys ztunnel can evaluate, and the Match fields (positive, negative) each fills.
_L4_WHEN = {
    "source.ip": ("source_ips", "not_source_ips"),
    "source.namespace": ("namespaces", "not_namespaces"),
    "source.principal": ("principals", "not_principals"),
    "destination.ip": ("destination_ips", "not_destination_ips"),
    "destination.port": ("destination_ports", "not_destination_ports"),
}


@dataclass(frozen=True)
class PolicyTranslation:
    """What one policy object gives ztunnel: its Authorization (None: nothing to send) and the
    conditions to write on the object's status."""

    authorization: authz.Authorization | None
    conditions: tuple[dict[str, str], ...] = ()


@dataclass
class _RuleOutcome:
    group: authz.Group | None
    http_fields: set[str] = field(default_factory=set)
    skipped: bool = False  # a DENY rule that lost a whole clause to stripping


def condition(status: bool, reason: str, message: str) -> dict[str, str]:
    """A ZtunnelAccepted condition (status job adds times and generations)."""
    return {"type": ZTUNNEL_ACCEPTED, "status": "True" if status else "False", "reason": reason, "message": message}


def target_refs(spec: Json) -> list[Json]:
    """`targetRef` and `targetRefs` together (model.GetTargetRefs)."""
    return ([spec["targetRef"]] if spec.get("targetRef") else []) + list(spec.get("targetRefs") or [])


def has_authorization(ap: Json | None) -> bool:
    """Whether a policy yields an Authorization at all (workloads only list those that do)."""
    if ap is None:
        return False
    spec = ap.get("spec") or {}
    return not target_refs(spec) and (spec.get("action") or "ALLOW") in ("ALLOW", "DENY")


def policy_selector(ap: Json | None) -> dict[str, str] | None:
    """A policy's matchLabels; None when it has no `selector` (an empty selector selects all)."""
    spec = (ap or {}).get("spec") or {}
    if spec.get("selector") is None:
        return None
    return dict(spec["selector"].get("matchLabels") or {})


def authorization_policy(ap: Json, root_namespace: str = ROOT_NAMESPACE) -> PolicyTranslation:
    """Translate one AuthorizationPolicy for ztunnel."""
    spec = ap.get("spec") or {}
    name, namespace = meta(ap)["name"], meta(ap).get("namespace", "")
    if target_refs(spec):
        return PolicyTranslation(None)  # Istio's convertAuthorizationPolicy: "not intended for ztunnel"
    action_name = spec.get("action") or "ALLOW"
    if action_name not in ("ALLOW", "DENY"):
        why = f"ztunnel does not support the {action_name} action"
        return PolicyTranslation(None, (condition(False, "UnsupportedValue", why),))
    action = authz.ALLOW if action_name == "ALLOW" else authz.DENY
    if spec.get("selector") is not None:
        scope = authz.WORKLOAD_SELECTOR
    else:
        scope = authz.GLOBAL if namespace == root_namespace else authz.NAMESPACE
    policy = authz.Authorization(name=name, namespace=namespace, scope=scope, action=action)
    outcomes = [_rule(action, rule or {}, namespace) for rule in spec.get("rules") or []]
    policy.rules.extend(o.group for o in outcomes if o.group is not None)
    return PolicyTranslation(policy, (_status(action, outcomes),))


def _status(action: int, outcomes: list[_RuleOutcome]) -> dict[str, str]:
    found = sorted(set().union(*(o.http_fields for o in outcomes)))
    if not found:
        return condition(True, "Accepted", ACCEPTED_MESSAGE)
    if action == authz.ALLOW:
        tail = _ALLOW_BOILERPLATE
    else:
        parts = [_DENY_BOILERPLATE] if any(o.http_fields and not o.skipped for o in outcomes) else []
        parts += [_DENY_NO_EFFECT] if any(o.skipped for o in outcomes) else []
        tail = " ".join(parts)
    return condition(True, "UnsupportedValue", _HTTP_RULE.format(", ".join(found), tail))


def _rule(action: int, rule: Json, namespace: str) -> _RuleOutcome:
    """One rule → one Group, or None when ztunnel must not see it."""
    http: set[str] = set()
    clauses: list[list[authz.Match]] = []
    operations = [(entry or {}).get("operation") or {} for entry in rule.get("to") or []]
    sources = [(entry or {}).get("source") or {} for entry in rule.get("from") or []]
    if operations:
        http.update(f for op in operations for f in _HTTP_OPERATION_FIELDS if op.get(f))
        clauses.append([_operation_match(op) for op in operations])
    if sources:
        http.update(f for src in sources for f in _HTTP_SOURCE_FIELDS if src.get(f))
        clauses.append([_source_match(src, namespace) for src in sources])
    for when in rule.get("when") or []:
        key = when.get("key", "")
        if key not in _L4_WHEN:
            http.add(key)
        clauses.append([_when_match(when)])
    if action == authz.ALLOW and http:
        return _RuleOutcome(None, http)  # an ALLOW rule with HTTP attributes never matches at L4
    kept = [[m for m in clause if _nonempty(m)] for clause in clauses]
    if any(not clause for clause in kept):
        # Some clause has no L4 match left: ztunnel would never match the rule.
        return _RuleOutcome(None, http, skipped=bool(http))
    return _RuleOutcome(authz.Group(rules=[authz.Rules(matches=clause) for clause in kept]), http)


def _operation_match(op: Json) -> authz.Match:
    return authz.Match(destination_ports=_ports(op.get("ports")), not_destination_ports=_ports(op.get("notPorts")))


def _source_match(src: Json, namespace: str) -> authz.Match:
    return authz.Match(
        source_ips=_addresses(src.get("ipBlocks")),
        not_source_ips=_addresses(src.get("notIpBlocks")),
        namespaces=_strings(src.get("namespaces")),
        not_namespaces=_strings(src.get("notNamespaces")),
        service_accounts=_service_accounts(src.get("serviceAccounts"), namespace),
        not_service_accounts=_service_accounts(src.get("notServiceAccounts"), namespace),
        principals=_strings(src.get("principals"), principal=True),
        not_principals=_strings(src.get("notPrincipals"), principal=True),
    )


def _when_match(when: Json) -> authz.Match:
    fields = _L4_WHEN.get(when.get("key", ""))
    if fields is None:
        return authz.Match()  # HTTP-only: nothing ztunnel can check
    convert = {
        "source_ips": _addresses,
        "destination_ips": _addresses,
        "destination_ports": _ports,
        "namespaces": _strings,
        "principals": lambda values: _strings(values, principal=True),
    }[fields[0]]
    return authz.Match(**{fields[0]: convert(when.get("values")), fields[1]: convert(when.get("notValues"))})


def _nonempty(match: authz.Match) -> bool:
    return bool(match.ListFields())


def _ports(values: Iterable[str] | None) -> list[int]:
    """Port strings; anything that is not a port number is ignored (stringToPort)."""
    out = []
    for value in values or []:
        if str(value).isdigit() and int(value) <= 65535:
            out.append(int(value))
    return out


def _addresses(values: Iterable[str] | None) -> list[authz.Address]:
    """IPs and CIDR blocks as (address, prefix length); the address is kept as written, unmasked,
    as netip.ParsePrefix does in stringToIP. Unparseable values are ignored."""
    out = []
    for value in values or []:
        try:
            net = ipaddress.ip_interface(value)
        except ValueError:
            continue
        length = net.network.prefixlen if "/" in value else net.max_prefixlen
        out.append(authz.Address(address=net.ip.packed, length=length))
    return out


def _strings(values: Iterable[str] | None, principal: bool = False) -> list[authz.StringMatch]:
    """Istio's string match syntax: `*` alone is presence, `*x` a suffix, `x*` a prefix.

    Principals are matched without the `spiffe://` scheme (ztunnel strips it from the peer's
    identity), so a principal written as a full SPIFFE URI is reduced to that form first.
    """
    out = []
    for value in values or []:
        if principal:
            value = value.removeprefix("spiffe://")
        if value == "*":
            out.append(authz.StringMatch(presence=authz.Empty()))
        elif value.startswith("*"):
            out.append(authz.StringMatch(suffix=value[1:]))
        elif value.endswith("*"):
            out.append(authz.StringMatch(prefix=value[:-1]))
        else:
            out.append(authz.StringMatch(exact=value))
    return out


def _service_accounts(values: Iterable[str] | None, namespace: str) -> list[authz.ServiceAccountMatch]:
    """`ns/sa`, or `sa` in the policy's own namespace."""
    out = []
    for value in values or []:
        ns, slash, sa = value.partition("/")
        out.append(authz.ServiceAccountMatch(namespace=ns if slash else namespace, serviceAccount=sa if slash else ns))
    return out


def selected_policy_names(
    view: ConfigView, namespace: str, labels: dict[str, str], root_namespace: str = ROOT_NAMESPACE
) -> list[str]:
    """`ns/name` of the selector policies that select a workload: those of its namespace and of the
    root namespace whose matchLabels match its labels and that yield an Authorization
    (buildWorkloadPolicies), sorted."""
    names = []
    for ns in {namespace, root_namespace}:
        for ap in view.list(AUTHORIZATION_POLICIES, ns):
            selector = policy_selector(ap)
            if selector is not None and selects(selector, labels) and has_authorization(ap):
                names.append(f"{ns}/{meta(ap)['name']}")
    return sorted(names)
