"""L4 authorization: Istio's order and match semantics, as tables, plus Hypothesis properties."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.ztunnel import rbac
from dataplane.ztunnel.rbac import Connection
from dataplane.ztunnel.state import AUTHORIZATION_TYPE_URL, Policy, StateStore, Workload
from mesh.identity import Identity
from mesh.proto_gen.istio.security import authorization_pb2 as authz
from tests.unit.ztunnel import builders as b

pytestmark = pytest.mark.unit

SLEEP = Identity("cluster.local", "foo", "sleep")
OTHER = Identity("cluster.local", "foo", "other")
BAR = Identity("cluster.local", "bar", "client")
WEB = Workload.from_proto(b.workload("web-1", ["198.18.1.10"], namespace="foo", sa="web"))

S = authz.StringMatch


def presence() -> authz.StringMatch:
    return authz.StringMatch(presence=authz.Empty())


def cidr(text: str) -> authz.Address:
    net = ipaddress.ip_interface(text)
    return authz.Address(address=net.ip.packed, length=net.network.prefixlen)


def policy(
    name: str,
    action: int = authz.ALLOW,
    rules: list[list[list[authz.Match]]] | None = None,
    *,
    namespace: str = "foo",
    scope: int = authz.NAMESPACE,
    dry_run: bool = False,
) -> Policy:
    """rules: rules (OR) of clauses (AND) of matches (OR)."""
    groups = [authz.Group(rules=[authz.Rules(matches=clause) for clause in rule]) for rule in rules or []]
    message = authz.Authorization(
        name=name, namespace=namespace, scope=scope, action=action, rules=groups, dry_run=dry_run
    )
    return Policy.from_proto(message)


def conn(peer: Identity | None = SLEEP, src: str = "198.18.2.20", port: int = 8080, dst: str = "198.18.1.10"):
    return Connection(
        source_identity=peer,
        source_ip=ipaddress.ip_address(src),
        destination_ip=ipaddress.ip_address(dst),
        destination_port=port,
        destination_workload=WEB,
    )


def one(*matches: authz.Match) -> list[list[authz.Match]]:
    """A rule with one clause of these matches."""
    return [list(matches)]


ALLOW_NOTHING = policy("allow-nothing")
DENY_ALL = policy("deny-all", authz.DENY, [[]])
ALLOW_ALL = policy("allow-all", authz.ALLOW, [[]])
ALLOW_SLEEP = policy("allow-sleep", rules=[one(authz.Match(principals=[S(exact="cluster.local/ns/foo/sa/sleep")]))])
STRICT = policy(
    "istio_converted_static_strict",
    authz.DENY,
    [one(authz.Match(not_principals=[presence()]))],
    namespace="istio-system",
    scope=authz.WORKLOAD_SELECTOR,
)

# (policies, connection, allowed, deciding policy)
TABLE = {
    "no policies: allow": ([], conn(), True, None),
    "allow-nothing denies": ([ALLOW_NOTHING], conn(), False, None),
    "deny-all denies": ([DENY_ALL], conn(), False, "foo/deny-all"),
    "allow-all allows": ([ALLOW_ALL], conn(None), True, "foo/allow-all"),
    "principal allowed": ([ALLOW_SLEEP], conn(SLEEP), True, "foo/allow-sleep"),
    "other principal denied": ([ALLOW_SLEEP], conn(OTHER), False, None),
    "no identity cannot be a principal": ([ALLOW_SLEEP], conn(None), False, None),
    "DENY beats ALLOW": ([ALLOW_SLEEP, DENY_ALL], conn(SLEEP), False, "foo/deny-all"),
    "DENY not matching, ALLOW matching": (
        [ALLOW_SLEEP, policy("deny-bar", authz.DENY, [one(authz.Match(namespaces=[S(exact="bar")]))])],
        conn(SLEEP),
        True,
        "foo/allow-sleep",
    ),
    "STRICT refuses plaintext": ([STRICT], conn(None), False, "istio-system/istio_converted_static_strict"),
    "STRICT lets mTLS in": ([STRICT], conn(SLEEP), True, None),
    "a dry-run DENY only reports": ([policy("audit", authz.DENY, [[]], dry_run=True)], conn(), True, None),
    "a dry-run ALLOW does not make the default deny": (
        [policy("trial", authz.ALLOW, [], dry_run=True)],
        conn(),
        True,
        None,
    ),
}


@pytest.mark.parametrize(("policies", "connection", "allowed", "deciding"), TABLE.values(), ids=TABLE.keys())
def test_istio_order(policies, connection, allowed, deciding) -> None:
    decision = rbac.authorize(connection, policies)
    assert (decision.allowed, decision.policy) == (allowed, deciding)


def test_reasons_say_what_decided() -> None:
    assert rbac.authorize(conn(), [DENY_ALL]).reason == "denied by DENY policy foo/deny-all"
    assert rbac.authorize(conn(), []).reason == "allowed: no ALLOW policy applies"
    assert rbac.authorize(conn(), [ALLOW_SLEEP]).reason == "allowed by ALLOW policy foo/allow-sleep"
    denied = rbac.authorize(conn(OTHER), [ALLOW_NOTHING, ALLOW_SLEEP])
    assert denied.reason == "denied: no ALLOW policy matched (foo/allow-nothing, foo/allow-sleep)"


def test_dry_run_results_are_returned_for_the_log() -> None:
    decision = rbac.authorize(
        conn(OTHER), [policy("audit", authz.DENY, [[]], dry_run=True), policy("try", rules=[[]], dry_run=True)]
    )
    assert decision.allowed
    assert [(d.policy, d.action.value, d.matched) for d in decision.dry_run] == [
        ("foo/audit", "DENY", True),
        ("foo/try", "ALLOW", True),
    ]


def m(**fields) -> authz.Match:
    return authz.Match(**fields)


# (one match's fields, connection, matches)
MATCHES = {
    "namespace exact": (m(namespaces=[S(exact="foo")]), conn(SLEEP), True),
    "namespace other": (m(namespaces=[S(exact="foo")]), conn(BAR), False),
    "namespace prefix": (m(namespaces=[S(prefix="fo")]), conn(SLEEP), True),
    "notNamespaces excludes": (m(not_namespaces=[S(exact="foo")]), conn(SLEEP), False),
    "notNamespaces admits others": (m(not_namespaces=[S(exact="foo")]), conn(BAR), True),
    # No identity: the namespace compared is "" (ztunnel), so notNamespaces holds.
    "notNamespaces without identity": (m(not_namespaces=[S(exact="foo")]), conn(None), True),
    "principal suffix": (m(principals=[S(suffix="/sa/sleep")]), conn(SLEEP), True),
    "principal without scheme": (m(principals=[S(exact="spiffe://cluster.local/ns/foo/sa/sleep")]), conn(), False),
    "principal presence": (m(principals=[presence()]), conn(SLEEP), True),
    "principal presence, no identity": (m(principals=[presence()]), conn(None), False),
    "notPrincipals presence, no identity": (m(not_principals=[presence()]), conn(None), True),
    "values within a field OR": (m(principals=[S(exact="x"), S(suffix="/sa/sleep")]), conn(SLEEP), True),
    "fields AND": (m(principals=[presence()], destination_ports=[80]), conn(SLEEP, port=8080), False),
    "positive and negative together": (
        m(source_ips=[cidr("198.18.4.0/22")], not_source_ips=[cidr("198.18.5.5/32")]),
        conn(src="198.18.5.5"),
        False,
    ),
    "ipBlocks inside": (m(source_ips=[cidr("198.18.4.0/22")]), conn(src="198.18.7.255"), True),
    "ipBlocks outside": (m(source_ips=[cidr("198.18.4.0/22")]), conn(src="198.18.8.0"), False),
    "ipBlocks with host bits": (m(source_ips=[cidr("10.1.2.3/16")]), conn(src="10.1.200.1"), True),
    "ipv6 block": (m(source_ips=[cidr("2001:db8::/32")]), conn(src="2001:db8::9"), True),
    "destination ip": (m(destination_ips=[cidr("198.18.1.10/32")]), conn(), True),
    "not destination ip": (m(not_destination_ips=[cidr("198.18.1.0/24")]), conn(), False),
    "port": (m(destination_ports=[8080, 9090]), conn(port=9090), True),
    "notPorts": (m(not_destination_ports=[15090]), conn(port=15090), False),
    "service account": (
        m(service_accounts=[authz.ServiceAccountMatch(namespace="foo", serviceAccount="sleep")]),
        conn(SLEEP),
        True,
    ),
    "service account other namespace": (
        m(service_accounts=[authz.ServiceAccountMatch(namespace="bar", serviceAccount="sleep")]),
        conn(SLEEP),
        False,
    ),
    "service account, no identity": (
        m(not_service_accounts=[authz.ServiceAccountMatch(namespace="foo", serviceAccount="sleep")]),
        conn(None),
        True,
    ),
}


@pytest.mark.parametrize(("match", "connection", "matches"), MATCHES.values(), ids=MATCHES.keys())
def test_match_fields(match, connection, matches) -> None:
    assert rbac.policy_matches(policy("p", rules=[one(match)]), connection) is matches


def test_rules_or_clauses_and_matches_or() -> None:
    ns_foo, port_80 = m(namespaces=[S(exact="foo")]), m(destination_ports=[80])
    # One rule, two clauses: both must hold.
    assert not rbac.policy_matches(policy("p", rules=[[[ns_foo], [port_80]]]), conn(SLEEP, port=8080))
    assert rbac.policy_matches(policy("p", rules=[[[ns_foo], [port_80]]]), conn(SLEEP, port=80))
    # One clause, two matches: either will do.
    assert rbac.policy_matches(policy("p", rules=[[[ns_foo, port_80]]]), conn(SLEEP, port=8080))
    # Two rules: either will do.
    assert rbac.policy_matches(policy("p", rules=[[[port_80]], [[ns_foo]]]), conn(SLEEP, port=8080))


def test_empty_matches_are_skipped_and_empty_clauses_hold() -> None:
    # A clause of only empty matches (what stripping HTTP fields leaves) never holds ...
    assert not rbac.policy_matches(policy("p", rules=[[[authz.Match()]]]), conn())
    # ... an empty match beside a real one is ignored ...
    assert rbac.policy_matches(policy("p", rules=[[[authz.Match(), m(destination_ports=[8080])]]]), conn())
    # ... a clause with no matches holds (ztunnel: `if clause.is_empty() { clause_match = true }`) ...
    assert rbac.policy_matches(policy("p", rules=[[[], [m(destination_ports=[8080])]]]), conn())
    # ... and a policy with no rules never matches.
    assert not rbac.policy_matches(policy("p", rules=[]), conn())


def _store(*policies: authz.Authorization) -> StateStore:
    store = StateStore()
    assert store.apply(AUTHORIZATION_TYPE_URL, b.resources(*policies)) == []
    return store


def test_applicable_policies_namespace_global_and_selected() -> None:
    deny = authz.DENY
    store = _store(
        authz.Authorization(name="ns", namespace="foo", scope=authz.NAMESPACE, action=deny),
        authz.Authorization(name="elsewhere", namespace="bar", scope=authz.NAMESPACE, action=deny),
        authz.Authorization(name="mesh", namespace="istio-system", scope=authz.GLOBAL, action=deny),
        authz.Authorization(name="picked", namespace="foo", scope=authz.WORKLOAD_SELECTOR, action=deny),
        authz.Authorization(name="unpicked", namespace="foo", scope=authz.WORKLOAD_SELECTOR, action=deny),
    )
    web = Workload.from_proto(
        b.workload("web-1", ["198.18.1.10"], namespace="foo", policies=["foo/picked", "foo/not-yet-sent"])
    )
    keys = [p.key for p in rbac.applicable_policies(store, web)]
    assert keys == ["foo/ns", "istio-system/mesh", "foo/picked"]


def test_check_uses_the_store() -> None:
    store = _store(
        authz.Authorization(
            name="istio_converted_static_strict",
            namespace="istio-system",
            scope=authz.WORKLOAD_SELECTOR,
            action=authz.DENY,
            rules=[authz.Group(rules=[authz.Rules(matches=[authz.Match(not_principals=[presence()])])])],
        )
    )
    strict = Workload.from_proto(
        b.workload("web-1", ["198.18.1.10"], namespace="foo", policies=["istio-system/istio_converted_static_strict"])
    )
    plaintext = Connection(
        source_identity=None,
        source_ip=ipaddress.ip_address("198.18.9.9"),
        destination_ip=ipaddress.ip_address("198.18.1.10"),
        destination_port=80,
        destination_workload=strict,
    )
    assert not rbac.check(store, plaintext).allowed
    assert rbac.check(store, Connection(**{**plaintext.__dict__, "source_identity": SLEEP})).allowed
    permissive = Connection(**{**plaintext.__dict__, "destination_workload": WEB})
    assert rbac.check(store, permissive).allowed


# --- properties ------------------------------------------------------------------------------------

IDENTITIES = [SLEEP, OTHER, BAR, None]
NAMES = ["foo", "bar", "fo", ""]
PRINCIPALS = ["cluster.local/ns/foo/sa/sleep", "cluster.local/ns/bar/sa/client", "cluster.local/ns/foo/"]

string_matches = st.one_of(
    st.builds(lambda v: S(exact=v), st.sampled_from(NAMES + PRINCIPALS)),
    st.builds(lambda v: S(prefix=v), st.sampled_from(NAMES + PRINCIPALS)),
    st.builds(lambda v: S(suffix=v), st.sampled_from(["/sa/sleep", "client", "o"])),
    st.just(presence()),
)
addresses = st.sampled_from(["198.18.2.20/32", "198.18.0.0/16", "10.0.0.0/8", "0.0.0.0/0"]).map(cidr)
ports = st.sampled_from([80, 8080, 9090])
accounts = st.builds(
    lambda ns, sa: authz.ServiceAccountMatch(namespace=ns, serviceAccount=sa),
    st.sampled_from(["foo", "bar"]),
    st.sampled_from(["sleep", "client", "other"]),
)
small = {"max_size": 2}
matches = st.builds(
    authz.Match,
    namespaces=st.lists(st.sampled_from(NAMES).map(lambda v: S(exact=v)), **small),
    not_namespaces=st.lists(st.sampled_from(NAMES).map(lambda v: S(exact=v)), **small),
    principals=st.lists(string_matches, **small),
    not_principals=st.lists(string_matches, **small),
    source_ips=st.lists(addresses, **small),
    not_source_ips=st.lists(addresses, **small),
    destination_ports=st.lists(ports, **small),
    not_destination_ports=st.lists(ports, **small),
    service_accounts=st.lists(accounts, **small),
    not_service_accounts=st.lists(accounts, **small),
)
rules = st.lists(st.lists(st.lists(matches, max_size=3), max_size=2), max_size=2)


@st.composite
def policies(draw, action: int | None = None) -> Policy:
    return policy(
        f"p{draw(st.integers(0, 10**6))}",
        draw(st.sampled_from([authz.ALLOW, authz.DENY])) if action is None else action,
        draw(rules),
        dry_run=draw(st.booleans()) and draw(st.booleans()),
    )


connections = st.builds(
    conn,
    peer=st.sampled_from(IDENTITIES),
    src=st.sampled_from(["198.18.2.20", "198.18.5.5", "10.1.1.1", "192.0.2.1"]),
    port=ports,
)


@given(connections)
def test_with_no_policies_everything_is_allowed(connection) -> None:
    assert rbac.authorize(connection, []).allowed


@settings(max_examples=150)
@given(st.lists(policies(), max_size=4), policies(authz.DENY), connections)
def test_adding_a_deny_never_allows_more(existing, deny, connection) -> None:
    if rbac.authorize(connection, [*existing, deny]).allowed:
        assert rbac.authorize(connection, existing).allowed


@settings(max_examples=150)
@given(st.lists(policies(), max_size=4), policies(authz.ALLOW), connections)
def test_adding_an_allow_never_denies_what_an_allow_already_allowed(existing, allow, connection) -> None:
    before = rbac.authorize(connection, existing)
    enforced_allow = any(p.action.value == "ALLOW" and not p.dry_run for p in existing)
    if before.allowed and enforced_allow:
        assert rbac.authorize(connection, [*existing, allow]).allowed


@settings(max_examples=100)
@given(st.lists(policies(), max_size=4), st.lists(policies(), max_size=3), connections)
def test_dry_run_policies_never_change_the_decision(enforced, shadow, connection) -> None:
    enforced = [p for p in enforced if not p.dry_run]
    shadow = [Policy(**{**p.__dict__, "dry_run": True}) for p in shadow]
    assert rbac.authorize(connection, enforced).allowed == rbac.authorize(connection, [*enforced, *shadow]).allowed


@settings(max_examples=100)
@given(st.lists(policies(), max_size=5), connections, st.randoms())
def test_the_order_of_policies_does_not_change_the_outcome(found, connection, random) -> None:
    shuffled = list(found)
    random.shuffle(shuffled)
    assert rbac.authorize(connection, found).allowed == rbac.authorize(connection, shuffled).allowed
