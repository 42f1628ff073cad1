"""L4 authorization: Istio's evaluation of AuthorizationPolicy at ztunnel, as pure functions.

Reproduces istio/ztunnel: src/state.rs `assert_rbac` and src/rbac.rs `Authorization::matches`
(reference §3; Istio's documented order, istio.io: authorization-policy reference):
- applicable policies: the NAMESPACE-scoped ones of the destination's namespace, every GLOBAL one
  (root namespace), and the keys the destination workload lists in `authorization_policies`; a
  listed key the store does not hold yet is skipped (a transient state while xDS catches up);
- 1. any matching DENY → deny; 2. no ALLOW policy → allow; 3. any matching ALLOW → allow;
  4. otherwise deny;
- dry-run policies take no part: each is evaluated and reported in `Decision.dry_run` only;
- a policy without rules never matches; a rule without clauses matches every connection;
- rules are OR-ed, a rule's clauses AND-ed, a clause's matches OR-ed, skipping empty matches (so
  a clause of only empty matches fails, while a clause with no matches at all holds); within a
  match every non-empty field must hold, a positive field by any of its values, a negative field
  by none of them;
- principals and namespaces come from the peer's identity, principals compared without
  `spiffe://`; with no identity (plaintext on 15006) no principal or service account matches and
  the namespace is "", which is how the converted STRICT policy (`not_principals: [presence]`)
  denies plaintext.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mesh.identity import Identity

from .state.address import IpAddress
from .state.policy import Action, Clause, Match, Policy, ServiceAccountMatch, StringMatch, StringMatchKind
from .state.store import GLOBAL_NAMESPACE
from .state.workload import Workload


@dataclass(frozen=True, kw_only=True)
class Connection:
    """What L4 authorization sees of a connection arriving at `destination_workload`.

    `source_identity` is the peer's verified certificate identity, or None on plaintext.
    """

    source_identity: Identity | None
    source_ip: IpAddress
    destination_ip: IpAddress
    destination_port: int
    destination_workload: Workload


@dataclass(frozen=True)
class DryRun:
    """A dry-run policy's verdict had it been enforced: logged, never applied."""

    policy: str
    action: Action
    matched: bool


@dataclass(frozen=True)
class Decision:
    """The outcome: allowed or not, the `ns/name` of the policy that decided (None when the
    decision fell to a default), and a reason for logs and `meshctl x authz check`."""

    allowed: bool
    policy: str | None
    reason: str
    dry_run: tuple[DryRun, ...] = ()


class PolicyLookup(Protocol):
    """The reads that find applicable policies (StateStore provides them)."""

    def policy(self, key: str) -> Policy | None: ...
    def namespace_policies(self, namespace: str) -> list[str]: ...


def applicable_policies(lookup: PolicyLookup, workload: Workload) -> list[Policy]:
    """The policies that govern connections to `workload`, in ztunnel's order (namespace,
    global, the workload's own), each once."""
    keys = [
        *lookup.namespace_policies(workload.namespace),
        *lookup.namespace_policies(GLOBAL_NAMESPACE),
        *workload.authorization_policies,
    ]
    out = []
    for key in dict.fromkeys(keys):
        policy = lookup.policy(key)
        if policy is not None:
            out.append(policy)
    return out


def check(lookup: PolicyLookup, connection: Connection) -> Decision:
    """Authorize `connection` against the policies the store holds for its destination."""
    return authorize(connection, applicable_policies(lookup, connection.destination_workload))


def authorize(connection: Connection, policies: Iterable[Policy]) -> Decision:
    """Istio's order over `policies` (see the module docstring)."""
    enforced, dry_run = [], []
    for policy in policies:
        if policy.dry_run:
            dry_run.append(DryRun(policy.key, policy.action, policy_matches(policy, connection)))
        else:
            enforced.append(policy)
    shadow = tuple(dry_run)
    deny = [p for p in enforced if p.action is Action.DENY]
    allow = [p for p in enforced if p.action is Action.ALLOW]
    for policy in deny:
        if policy_matches(policy, connection):
            return Decision(False, policy.key, f"denied by DENY policy {policy.key}", shadow)
    if not allow:
        return Decision(True, None, "allowed: no ALLOW policy applies", shadow)
    for policy in allow:
        if policy_matches(policy, connection):
            return Decision(True, policy.key, f"allowed by ALLOW policy {policy.key}", shadow)
    names = ", ".join(p.key for p in allow)
    return Decision(False, None, f"denied: no ALLOW policy matched ({names})", shadow)


def policy_matches(policy: Policy, connection: Connection) -> bool:
    """Whether any rule of `policy` matches: a rule when all its clauses do, a clause when it has
    no matches at all or any of its non-empty matches holds (ztunnel skips empty matches)."""
    return any(all(_clause_matches(clause, connection) for clause in rule) for rule in policy.rules)


def _clause_matches(clause: Clause, connection: Connection) -> bool:
    if not clause:
        return True  # ztunnel: `if clause.is_empty() { clause_match = true }`
    return any(match_matches(m, connection) for m in clause if not m.is_empty)


def match_matches(match: Match, connection: Connection) -> bool:
    """Every non-empty field of `match` holds for `connection` (ztunnel: matches_internal per field)."""
    peer = connection.source_identity
    # Without a peer identity ztunnel compares namespaces against "" and lets no principal match.
    namespace = peer.namespace if peer is not None else ""
    checks: list[tuple[Sequence, Sequence, Callable]] = [
        (match.destination_ips, match.not_destination_ips, lambda net: connection.destination_ip in net),
        (match.source_ips, match.not_source_ips, lambda net: connection.source_ip in net),
        (match.destination_ports, match.not_destination_ports, lambda p: connection.destination_port == p),
        (match.service_accounts, match.not_service_accounts, lambda sa: _service_account_matches(sa, peer)),
        (match.principals, match.not_principals, lambda s: peer is not None and string_matches(s, principal(peer))),
        (match.namespaces, match.not_namespaces, lambda s: string_matches(s, namespace)),
    ]
    return all(_field_holds(positive, negative, predicate) for positive, negative, predicate in checks)


def _field_holds(positive: Sequence, negative: Sequence, predicate: Callable) -> bool:
    """A positive field holds when any value matches, a negative one when none does; an empty
    field is skipped."""
    if positive and not any(predicate(v) for v in positive):
        return False
    return not (negative and any(predicate(v) for v in negative))


def principal(identity: Identity) -> str:
    """The identity as policies name it: the SPIFFE URI without `spiffe://`."""
    return str(identity).removeprefix("spiffe://")


def string_matches(match: StringMatch, value: str) -> bool:
    """Istio's StringMatch; presence means any non-empty value."""
    if match.kind is StringMatchKind.EXACT:
        return value == match.value
    if match.kind is StringMatchKind.PREFIX:
        return value.startswith(match.value)
    if match.kind is StringMatchKind.SUFFIX:
        return value.endswith(match.value)
    return value != ""


def _service_account_matches(match: ServiceAccountMatch, peer: Identity | None) -> bool:
    return peer is not None and (peer.namespace, peer.service_account) == (match.namespace, match.service_account)
