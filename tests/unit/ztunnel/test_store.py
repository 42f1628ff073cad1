"""The state store: xDS updates applied atomically with per-resource rejection, named indexes,
endpoints and load balancing."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest
from google.protobuf import any_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.ztunnel.state import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    GLOBAL_NAMESPACE,
    StateStore,
)
from mesh.proto_gen.istio.security import authorization_pb2 as authz
from mesh.proto_gen.istio.workload import workload_pb2 as wl
from tests.unit.ztunnel import builders as b

pytestmark = pytest.mark.unit

WEB = b.svc_key("web")


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def store_with(*messages, rng: random.Random | None = None) -> StateStore:
    store = StateStore(rng)
    addresses = [m for m in messages if not isinstance(m, authz.Authorization)]
    policies = [m for m in messages if isinstance(m, authz.Authorization)]
    assert store.apply(ADDRESS_TYPE_URL, b.resources(*addresses)) == []
    assert store.apply(AUTHORIZATION_TYPE_URL, b.resources(*policies)) == []
    return store


def test_apply_indexes_workloads_services_and_policies() -> None:
    store = store_with(
        b.workload("web-1", ["198.18.1.10"], sa="web", services={WEB: {80: 8080}}),
        b.workload("sleep-1", ["198.18.2.10"], sa="sleep", node="node-2"),
        b.service("web", ["198.19.0.10"], {80: 8080}),
        authz.Authorization(name="ns-wide", namespace="default", scope=authz.NAMESPACE),
        authz.Authorization(name="mesh-wide", namespace="istio-system", scope=authz.GLOBAL),
        authz.Authorization(name="selected", namespace="default", scope=authz.WORKLOAD_SELECTOR),
    )
    assert store.workload("Kubernetes//Pod/default/web-1").service_account == "web"
    assert store.workload_by_ip("198.18.2.10").name == "sleep-1"
    assert store.workload_by_ip(ip("198.18.2.10"), network="other") is None
    assert store.workload_by_ip("198.18.9.9") is None
    assert [w.name for w in store.workloads_on_node("node-2")] == ["sleep-1"]
    assert store.service(WEB).hostname == "web.default.svc.cluster.local"
    assert store.service_by_vip("198.19.0.10", 80).key == WEB
    assert [(e.workload.name, e.target_port) for e in store.endpoints(store.service(WEB), 80)] == [("web-1", 8080)]
    # Scope decides where a policy is filed: GLOBAL under "" whatever its namespace.
    assert store.namespace_policies("default") == ["default/ns-wide"]
    assert store.namespace_policies(GLOBAL_NAMESPACE) == ["istio-system/mesh-wide"]
    assert store.policy("default/selected").name == "selected"
    assert [p.key for p in store.policies()] == ["default/ns-wide", "default/selected", "istio-system/mesh-wide"]


def test_bad_resources_are_rejected_one_by_one_and_the_rest_applied() -> None:
    store = StateStore()
    good = b.workload("web-1", ["198.18.1.10"])
    bad = b.workload("web-2", ["198.18.1.11"])
    bad.addresses.append(b"\x01")
    renamed = b.service("web", ["198.19.0.10"], {80: 80})
    updated = b.resources(good, bad)
    updated["default/not-its-name"] = b.packed(renamed)
    updated["garbage"] = any_pb2.Any(type_url="type.googleapis.com/istio.workload.Address", value=b"\xff\xff")
    updated["wrong-type"] = b.packed(authz.Authorization(name="x", namespace="y"))
    rejected = store.apply(ADDRESS_TYPE_URL, updated)
    assert {r.name for r in rejected} == {bad.uid, "default/not-its-name", "garbage", "wrong-type"}
    by_name = {r.name: str(r) for r in rejected}
    assert by_name[bad.uid] == f"{bad.uid}: addresses[1]: an IP address is 4 or 16 bytes, not 1"
    assert (
        "differs from the service's own name 'default/web.default.svc.cluster.local'" in by_name["default/not-its-name"]
    )
    assert "cannot decode istio.workload.Address" in by_name["garbage"]
    assert "expected istio.workload.Address" in by_name["wrong-type"]
    assert store.workload(good.uid) is not None and store.workload(bad.uid) is None
    # The NACK's error_detail: "name: reason" joined by "; " (reference §1).
    assert "; ".join(str(r) for r in rejected).count(": ") >= 4


def test_a_rejected_update_keeps_the_previous_version() -> None:
    store = store_with(b.workload("web-1", ["198.18.1.10"], sa="web"))
    newer = b.workload("web-1", ["198.18.1.10"], sa="web")
    newer.tunnel_protocol = 9
    assert [r.name for r in store.apply(ADDRESS_TYPE_URL, b.resources(newer))] == [newer.uid]
    assert store.workload(newer.uid).service_account == "web"


def test_unknown_type_is_rejected() -> None:
    rejected = StateStore().apply("type.googleapis.com/envoy.Cluster", {"c": any_pb2.Any()})
    assert [str(r) for r in rejected] == ["c: ztunnel does not handle type type.googleapis.com/envoy.Cluster"]


def test_updates_reindex_and_removals_clean_every_index() -> None:
    store = store_with(
        b.workload("web-1", ["198.18.1.10"], node="node-1", services={WEB: {80: 8080}}),
        b.service("web", ["198.19.0.10"], {80: 8080}),
    )
    moved = b.workload("web-1", ["198.18.3.10"], node="node-3", services={})
    assert store.apply(ADDRESS_TYPE_URL, b.resources(moved)) == []
    assert store.workload_by_ip("198.18.1.10") is None
    assert store.workload_by_ip("198.18.3.10").name == "web-1"
    assert store.workloads_on_node("node-1") == [] and len(store.workloads_on_node("node-3")) == 1
    assert store.endpoints(store.service(WEB), 80) == []
    # A removal names a workload uid or a service key.
    store.apply(ADDRESS_TYPE_URL, {}, {moved.uid, WEB, "default/never-existed"})
    assert store.workloads() == [] and store.services() == []
    assert store.workload_by_ip("198.18.3.10") is None and store.service_by_vip("198.19.0.10", 80) is None
    store.apply(AUTHORIZATION_TYPE_URL, b.resources(authz.Authorization(name="p", namespace="default", scope=1)))
    store.apply(AUTHORIZATION_TYPE_URL, {}, {"default/p"})
    assert store.policies() == [] and store.namespace_policies("default") == []


def test_a_reused_address_answers_with_the_newest_claimant() -> None:
    store = store_with(b.workload("old", ["198.18.1.10"]))
    store.apply(ADDRESS_TYPE_URL, b.resources(b.workload("new", ["198.18.1.10"])))
    assert store.workload_by_ip("198.18.1.10").name == "new"
    store.apply(ADDRESS_TYPE_URL, {}, {b.pod_uid("default", "new")})
    assert store.workload_by_ip("198.18.1.10").name == "old"


def test_service_entries_sharing_a_vip_are_told_apart_by_port() -> None:
    store = store_with(b.service("a", ["240.240.0.1"], {80: 80}), b.service("b", ["240.240.0.1"], {443: 443}))
    assert store.service_by_vip("240.240.0.1", 80).name == "a"
    assert store.service_by_vip("240.240.0.1", 443).name == "b"
    assert store.service_by_vip("240.240.0.1", 8080).name == "b", "no port match: the newest"


def test_endpoints_target_ports_and_health() -> None:
    store = store_with(
        b.service("web", ["198.19.0.10"], {80: 8080, 9000: 0}),
        b.workload("a", ["198.18.1.1"], services={WEB: {80: 8080}}),
        b.workload("b", ["198.18.1.2"], services={WEB: {80: 0, 9000: 9901}}),  # named port resolved per pod
        b.workload("c", ["198.18.1.3"], services={WEB: {80: 8080}}, healthy=False),
        b.workload("d", ["198.18.1.4"], services={WEB: {}}),
    )
    web = store.service(WEB)
    assert [(e.workload.name, e.target_port) for e in store.endpoints(web, 80)] == [
        ("a", 8080),
        ("b", 8080),
        ("d", 8080),
    ]
    # A named target port (service target 0) reaches only the workloads that define it.
    assert [(e.workload.name, e.target_port) for e in store.endpoints(web, 9000)] == [("b", 9901)]
    assert store.endpoints(web, 81) == [], "a port the service does not have"


def test_publish_not_ready_addresses_allows_unhealthy_endpoints() -> None:
    lb = wl.LoadBalancing(health_policy=wl.LoadBalancing.ALLOW_ALL)
    store = store_with(
        b.service("web", ["198.19.0.10"], {80: 80}, lb=lb),
        b.workload("c", ["198.18.1.3"], services={WEB: {80: 80}}, healthy=False),
    )
    assert [e.workload.name for e in store.endpoints(store.service(WEB), 80)] == ["c"]


def test_pick_endpoint_is_weighted_by_capacity() -> None:
    store = store_with(
        b.service("web", ["198.19.0.10"], {80: 80}),
        b.workload("one", ["198.18.1.1"], services={WEB: {80: 80}}, capacity=1),
        b.workload("three", ["198.18.1.3"], services={WEB: {80: 80}}, capacity=3),
        b.workload("drained", ["198.18.1.4"], services={WEB: {80: 80}}, capacity=0),
        rng=random.Random(7),
    )
    web = store.service(WEB)
    picks = Counter(store.pick_endpoint(web, 80).workload.name for _ in range(4000))
    assert set(picks) == {"one", "three"}
    assert 2.6 < picks["three"] / picks["one"] < 3.4


def test_pick_endpoint_with_no_capacity_or_no_endpoint_is_none() -> None:
    store = store_with(
        b.service("web", ["198.19.0.10"], {80: 80}),
        b.workload("drained", ["198.18.1.4"], services={WEB: {80: 80}}, capacity=0),
    )
    assert store.pick_endpoint(store.service(WEB), 80) is None
    assert store.pick_endpoint(store.service(WEB), 81) is None


def _local_store(mode: int, prefs: list[int]) -> tuple[StateStore, object]:
    lb = wl.LoadBalancing(routing_preference=prefs, mode=mode)
    store = store_with(
        b.service("web", ["198.19.0.10"], {80: 80}, lb=lb),
        b.workload("same-node", ["198.18.1.1"], node="node-1", services={WEB: {80: 80}}, locality=("r", "z1", "")),
        b.workload("same-zone", ["198.18.2.1"], node="node-2", services={WEB: {80: 80}}, locality=("r", "z1", "")),
        b.workload("far", ["198.18.3.1"], node="node-3", services={WEB: {80: 80}}, locality=("r", "z2", "")),
        b.workload("client", ["198.18.1.9"], node="node-1", locality=("r", "z1", "")),
    )
    return store, store.workload_by_ip("198.18.1.9")


def test_internal_traffic_policy_local_keeps_only_the_node() -> None:
    store, client = _local_store(wl.LoadBalancing.STRICT, [wl.LoadBalancing.NODE])
    web = store.service(WEB)
    assert {store.pick_endpoint(web, 80, client).workload.name for _ in range(50)} == {"same-node"}
    remote_client = store.workload_by_ip("198.18.3.1")
    assert {store.pick_endpoint(web, 80, remote_client).workload.name for _ in range(50)} == {"far"}
    # Without a source, no preference applies.
    assert len({store.pick_endpoint(web, 80).workload.name for _ in range(200)}) == 3


def test_failover_prefers_the_best_rank_and_falls_back() -> None:
    prefs = [wl.LoadBalancing.NETWORK, wl.LoadBalancing.REGION, wl.LoadBalancing.ZONE]
    store, client = _local_store(wl.LoadBalancing.FAILOVER, prefs)
    web = store.service(WEB)
    assert {store.pick_endpoint(web, 80, client).workload.name for _ in range(100)} == {"same-node", "same-zone"}
    store.apply(ADDRESS_TYPE_URL, {}, {b.pod_uid("default", "same-node"), b.pod_uid("default", "same-zone")})
    assert store.pick_endpoint(web, 80, client).workload.name == "far"


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["w1", "w2", "w3"]),
            st.sampled_from(["198.18.1.1", "198.18.1.2", "198.18.1.3"]),
            st.sampled_from(["node-1", "node-2"]),
            st.booleans(),  # serves web
            st.booleans(),  # removed instead of updated
        ),
        max_size=25,
    )
)
def test_indexes_always_agree_with_the_workloads_held(events) -> None:
    """After any sequence of updates and removals, every index answers what a scan would."""
    store = StateStore()
    for name, address, node, serves, remove in events:
        if remove:
            store.apply(ADDRESS_TYPE_URL, {}, {b.pod_uid("default", name)})
        else:
            services = {WEB: {80: 80}} if serves else {}
            store.apply(ADDRESS_TYPE_URL, b.resources(b.workload(name, [address], node=node, services=services)))
    held = store.workloads()
    for address in ["198.18.1.1", "198.18.1.2", "198.18.1.3"]:
        found = store.workload_by_ip(address)
        claimants = [w for w in held if ip(address) in w.addresses]
        assert (found is None) == (not claimants)
        assert found is None or found in claimants
    for node in ["node-1", "node-2"]:
        assert store.workloads_on_node(node) == [w for w in held if w.node == node]
    web = b.service("web", ["198.19.0.10"], {80: 80})
    store.apply(ADDRESS_TYPE_URL, b.resources(web))
    expected = [w.name for w in held if WEB in w.services]
    assert [e.workload.name for e in store.endpoints(store.service(WEB), 80)] == expected
