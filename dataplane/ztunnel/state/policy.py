"""The Policy domain type: `istio.security.Authorization` converted once (reference §3).

The wire names differ between Istio's two schemas (istio calls field 5 `Group{rules}` →
`Rules{matches}`, ztunnel `Rule{clauses}` → `Clause{matches}`); the domain form uses ztunnel's:
a policy has rules (OR-ed), a rule has clauses (AND-ed), a clause has matches (OR-ed), and a match
has fields (AND-ed; the values within one field OR-ed). Evaluation is in `dataplane/ztunnel/rbac.py`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from enum import StrEnum

from mesh.proto_gen.istio.security import authorization_pb2 as authz

from .address import ip_from_bytes
from .convert import enum_name, port
from .errors import ResourceError

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Scope(StrEnum):
    """Which workloads a policy applies to without listing it: every workload (GLOBAL, a policy
    of the root namespace), those of its namespace (NAMESPACE), or none (WORKLOAD_SELECTOR: only
    the workloads that name it in `authorization_policies`)."""

    GLOBAL = "GLOBAL"
    NAMESPACE = "NAMESPACE"
    WORKLOAD_SELECTOR = "WORKLOAD_SELECTOR"


class Action(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


class StringMatchKind(StrEnum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    PRESENCE = "presence"  # any non-empty value (Istio's `*`)


@dataclass(frozen=True, slots=True)
class StringMatch:
    kind: StringMatchKind
    value: str = ""

    def __str__(self) -> str:
        return {"exact": "{}", "prefix": "{}*", "suffix": "*{}", "presence": "*"}[self.kind].format(self.value)


@dataclass(frozen=True, slots=True)
class ServiceAccountMatch:
    namespace: str
    service_account: str


@dataclass(frozen=True, slots=True)
class Match:
    """One match: every non-empty field must hold (AND); any value within a field may (OR)."""

    namespaces: tuple[StringMatch, ...] = ()
    not_namespaces: tuple[StringMatch, ...] = ()
    principals: tuple[StringMatch, ...] = ()
    not_principals: tuple[StringMatch, ...] = ()
    source_ips: tuple[IpNetwork, ...] = ()
    not_source_ips: tuple[IpNetwork, ...] = ()
    destination_ips: tuple[IpNetwork, ...] = ()
    not_destination_ips: tuple[IpNetwork, ...] = ()
    destination_ports: tuple[int, ...] = ()
    not_destination_ports: tuple[int, ...] = ()
    service_accounts: tuple[ServiceAccountMatch, ...] = ()
    not_service_accounts: tuple[ServiceAccountMatch, ...] = ()

    @property
    def is_empty(self) -> bool:
        """No field set: ztunnel skips such a match (it matches nothing, not everything)."""
        return not any(getattr(self, f.name) for f in fields(self))


Clause = tuple[Match, ...]  # OR
Rule = tuple[Clause, ...]  # AND; a rule without clauses matches every connection


@dataclass(frozen=True, kw_only=True)
class Policy:
    """An L4 authorization policy as ztunnel enforces it. A policy without rules never matches:
    as an ALLOW it allows nothing, as a DENY it denies nothing."""

    name: str
    namespace: str
    scope: Scope
    action: Action
    rules: tuple[Rule, ...] = ()
    dry_run: bool = False

    @property
    def key(self) -> str:
        """`namespace/name`: the xDS resource name, and what workloads list."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_proto(cls, message: authz.Authorization) -> Policy:
        """Convert an Authorization message; ResourceError names the field that cannot be taken."""
        if not message.name:
            raise ResourceError("name: a policy needs a name")
        rules = tuple(
            tuple(
                tuple(_match(m, f"rules[{r}].clauses[{c}].matches[{i}]") for i, m in enumerate(clause.matches))
                for c, clause in enumerate(group.rules)
            )
            for r, group in enumerate(message.rules)
        )
        return cls(
            name=message.name,
            namespace=message.namespace,
            scope=Scope(enum_name(authz.Scope, message.scope, "scope")),
            action=Action(enum_name(authz.Action, message.action, "action")),
            rules=rules,
            dry_run=message.dry_run,
        )


def _match(message: authz.Match, where: str) -> Match:
    return Match(
        namespaces=_strings(message.namespaces, f"{where}.namespaces"),
        not_namespaces=_strings(message.not_namespaces, f"{where}.not_namespaces"),
        principals=_strings(message.principals, f"{where}.principals"),
        not_principals=_strings(message.not_principals, f"{where}.not_principals"),
        source_ips=_networks(message.source_ips, f"{where}.source_ips"),
        not_source_ips=_networks(message.not_source_ips, f"{where}.not_source_ips"),
        destination_ips=_networks(message.destination_ips, f"{where}.destination_ips"),
        not_destination_ips=_networks(message.not_destination_ips, f"{where}.not_destination_ips"),
        destination_ports=tuple(port(p, f"{where}.destination_ports") for p in message.destination_ports),
        not_destination_ports=tuple(port(p, f"{where}.not_destination_ports") for p in message.not_destination_ports),
        service_accounts=tuple(ServiceAccountMatch(s.namespace, s.serviceAccount) for s in message.service_accounts),
        not_service_accounts=tuple(
            ServiceAccountMatch(s.namespace, s.serviceAccount) for s in message.not_service_accounts
        ),
    )


def _strings(messages, where: str) -> tuple[StringMatch, ...]:
    out = []
    for i, message in enumerate(messages):
        kind = message.WhichOneof("match_type")
        if kind is None:
            # Dropping it would widen the match (an emptied field is skipped): refuse instead.
            raise ResourceError(f"{where}[{i}]: a StringMatch needs exact, prefix, suffix or presence")
        out.append(StringMatch(StringMatchKind(kind), "" if kind == "presence" else getattr(message, kind)))
    return tuple(out)


def _networks(messages, where: str) -> tuple[IpNetwork, ...]:
    """(address, length) pairs as networks. The address may have host bits set (Istio keeps a CIDR
    as written); the network is what contains the connection's IP. Length 0 is /0, as ztunnel
    builds `IpNet::new(address, length)`."""
    out = []
    for i, message in enumerate(messages):
        ip = ip_from_bytes(message.address, f"{where}[{i}].address")
        if message.length > ip.max_prefixlen:
            raise ResourceError(f"{where}[{i}].length: {message.length} is longer than {ip.max_prefixlen}")
        out.append(ipaddress.ip_network(f"{ip}/{message.length}", strict=False))
    return tuple(out)
