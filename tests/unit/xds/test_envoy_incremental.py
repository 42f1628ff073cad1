"""Incremental Envoy translation: `EnvoyTranslator.update` re-translates only the Services a change
affects, reports exactly the resources whose bytes changed, and never diverges from `rebuild`."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.xds.generators.envoy import EnvoyDeltas, EnvoyTranslator
from services.xds.model import SERVICES, Key
from services.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from tests.unit.xds import envoy_objects as e
from tests.unit.xds import objects as o
from tests.unit.xds.envoy_checks import check_all

pytestmark = pytest.mark.unit

TYPES = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
HOST = "greeter.default.svc.cluster.local"
PORTS = [{"name": "grpc", "port": 80, "targetPort": 8080}]


def started(*objects: Any) -> tuple[o.Cluster, EnvoyTranslator]:
    cluster = o.Cluster(*objects)
    translator = EnvoyTranslator()
    translator.rebuild(cluster.store)
    return cluster, translator


def step(cluster: o.Cluster, translator: EnvoyTranslator, *objects: Any, delete: bool = False) -> EnvoyDeltas:
    changes = [(cluster.delete if delete else cluster.apply)(obj) for obj in objects]
    return translator.update(cluster.store, [c for c in changes if c is not None])


def touched(deltas: EnvoyDeltas) -> dict[str, set[str]]:
    """Per short type, the names updated or removed (types without any left out)."""
    short = {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS", SECRET: "SDS"}
    out = {short[t]: set(d.updated) | d.removed for t, d in deltas.by_type_url().items()}
    return {k: v for k, v in out.items() if v}


def svc(name: str, **labels: str) -> dict:
    return o.service(name, selector=labels or {"app": name}, ports=PORTS)


def pod(name: str, ip: str, **labels: str) -> dict:
    return o.pod(name, ip=ip, labels=labels)


BASE = (
    svc("greeter", app="greeter"),
    svc("greeter-a", app="greeter", version="a"),
    svc("other", app="other"),
    pod("a", "10.0.0.1", app="greeter", version="a"),
    pod("b", "10.0.0.2", app="greeter", version="b"),
    pod("x", "10.0.0.9", app="other"),
)


def cluster_of(name: str) -> str:
    return f"outbound|80||{name}.default.svc.cluster.local"


def test_the_first_rebuild_sends_everything_and_an_unchanged_write_nothing():
    cluster, translator = started()
    for obj in BASE:
        cluster.apply(obj)
    deltas = translator.rebuild(cluster.store)
    assert len(deltas.listeners.updated) == 6 and len(deltas.endpoints.updated) == 3
    assert step(cluster, translator, BASE[0]).empty


def test_a_pod_change_translates_only_the_services_selecting_it(monkeypatch):
    cluster, translator = started(*BASE)
    seen = []
    original = translator._translate
    monkeypatch.setattr(translator, "_translate", lambda key: seen.append(key) or original(key))
    deltas = step(cluster, translator, pod("b", "10.0.0.3", app="greeter", version="b"))
    assert seen == [Key(SERVICES, "default", "greeter")]
    assert touched(deltas) == {"EDS": {cluster_of("greeter")}}


def test_relabelling_a_pod_moves_its_endpoint_between_services():
    cluster, translator = started(*BASE)
    deltas = step(cluster, translator, pod("b", "10.0.0.2", app="greeter", version="a"))
    assert touched(deltas) == {"EDS": {cluster_of("greeter-a")}}
    addresses = [
        lb.endpoint.address.socket_address.address
        for lb in translator.resources(ENDPOINT)[cluster_of("greeter-a")].endpoints[0].lb_endpoints
    ]
    assert addresses == ["10.0.0.1", "10.0.0.2"]


def test_an_http_route_changes_only_its_parents_route_configurations():
    cluster, translator = started(*BASE)
    route = e.http_route("r", [e.service_parent("greeter")], [{"backendRefs": [e.backend("greeter-a")]}])
    assert touched(step(cluster, translator, route)) == {"RDS": {HOST, f"{HOST}:80"}}
    assert touched(step(cluster, translator, route, delete=True)) == {"RDS": {HOST, f"{HOST}:80"}}


def test_a_route_moved_to_another_parent_updates_both():
    cluster, translator = started(*BASE)
    route = e.http_route("r", [e.service_parent("greeter")], [{"backendRefs": [e.backend("greeter-a")]}])
    step(cluster, translator, route)
    moved = e.http_route("r", [e.service_parent("other")], [{"backendRefs": [e.backend("greeter-a")]}])
    other = "other.default.svc.cluster.local"
    assert touched(step(cluster, translator, moved)) == {"RDS": {HOST, f"{HOST}:80", other, f"{other}:80"}}


def test_a_backend_port_change_rebuilds_the_routes_that_name_it():
    cluster, translator = started(*BASE)
    backends = [e.backend("other", weight=50), e.backend("greeter-a", port=None, weight=50)]  # a's is read second
    step(cluster, translator, e.http_route("r", [e.service_parent("greeter")], [{"backendRefs": backends}]))
    moved = o.service("greeter-a", selector={"app": "greeter", "version": "a"}, ports=[{"name": "grpc", "port": 81}])
    deltas = touched(step(cluster, translator, moved))
    assert {HOST, f"{HOST}:80"} <= deltas["RDS"]
    first = translator.resources(ROUTE)[HOST].virtual_hosts[0].routes[0]
    assert [c.name for c in first.route.weighted_clusters.clusters] == [
        cluster_of("other"),
        "outbound|81||greeter-a.default.svc.cluster.local",
    ]


def test_a_backend_created_after_its_route_is_picked_up():
    cluster, translator = started(*BASE)
    route = e.http_route("r", [e.service_parent("greeter")], [{"backendRefs": [e.backend("late")]}])
    step(cluster, translator, route)
    assert translator.resources(ROUTE)[HOST].virtual_hosts[0].routes[0].typed_per_filter_config  # fails: no backend
    step(cluster, translator, svc("late"))
    assert translator.resources(ROUTE)[HOST].virtual_hosts[0].routes[0].route.cluster == cluster_of("late")


def test_a_destination_rule_changes_the_clusters_and_hash_policy_of_its_host():
    cluster, translator = started(*BASE)
    dr = e.destination_rule("d", "greeter", trafficPolicy={"loadBalancer": {"consistentHash": {"useSourceIp": True}}})
    assert touched(step(cluster, translator, dr)) == {"CDS": {cluster_of("greeter")}, "RDS": {HOST, f"{HOST}:80"}}
    subsets = e.destination_rule("d", "greeter", subsets=[{"name": "a", "labels": {"version": "a"}}])
    deltas = touched(step(cluster, translator, subsets))
    assert deltas["CDS"] == {cluster_of("greeter"), "outbound|80|a|greeter.default.svc.cluster.local"}


def test_a_virtual_service_by_short_name_changes_its_host_only():
    cluster, translator = started(*BASE)
    vs = e.virtual_service("v", ["greeter"], [{"route": [{"destination": {"host": "greeter-a"}}]}])
    assert touched(step(cluster, translator, vs)) == {"RDS": {HOST, f"{HOST}:80"}}


def test_deleting_a_service_removes_all_it_served():
    cluster, translator = started(*BASE)
    deltas = step(cluster, translator, BASE[2], delete=True)
    other = "other.default.svc.cluster.local"
    assert touched(deltas) == {
        "LDS": {other, f"{other}:80"},
        "RDS": {other, f"{other}:80"},
        "CDS": {cluster_of("other")},
        "EDS": {cluster_of("other")},
    }
    assert all(not d.updated for d in deltas.by_type_url().values())


def test_removing_a_service_brings_back_the_service_entry_it_shadowed():
    entry = o.service_entry(
        "shadow",
        hosts=[HOST],
        ports=[{"number": 80, "name": "grpc"}],
        resolution="STATIC",
        endpoints=[{"address": "203.0.113.9"}],
    )
    cluster, translator = started(*BASE, entry)
    deltas = step(cluster, translator, BASE[0], delete=True)
    assert cluster_of("greeter") in deltas.endpoints.updated and not deltas.listeners.removed
    lb = translator.resources(ENDPOINT)[cluster_of("greeter")].endpoints[0].lb_endpoints
    assert [x.endpoint.address.socket_address.address for x in lb] == ["203.0.113.9"]


# --- property: update never diverges from rebuild -------------------------------------------------

_NS = st.sampled_from(["default", "default", "b"])
_APPS = st.sampled_from([{"app": "x"}, {"app": "x", "version": "1"}, {"app": "x", "version": "2"}, {"app": "y"}])
_PORTS = st.sampled_from(
    [
        [{"name": "grpc", "port": 80, "targetPort": 8080}],
        [{"name": "grpc", "port": 80, "targetPort": "serve"}, {"name": "http", "port": 81}],
        [{"name": "dns", "port": 53, "protocol": "UDP"}],
    ]
)
_SERVICES = st.builds(
    o.service,
    st.sampled_from(["s0", "s1"]),
    ns=_NS,
    selector=st.sampled_from([None, {"app": "x"}, {"version": "1"}, {"app": "y"}]),
    ports=_PORTS,
    type=st.sampled_from(["ClusterIP", "ClusterIP", "ExternalName"]),
)
_PODS = st.builds(
    o.pod,
    st.sampled_from(["p0", "p1", "p2"]),
    ns=_NS,
    ip=st.sampled_from([None, "10.0.0.1", "10.0.0.2"]),
    labels=_APPS,
    phase=st.sampled_from(["Running", "Running", "Pending"]),
    ports=st.sampled_from([None, [{"name": "serve", "containerPort": 9000}]]),
    conditions=st.sampled_from([[], [{"type": "Ready", "status": "False"}]]),
)
_BACKENDS = st.lists(
    st.builds(
        e.backend,
        st.sampled_from(["s0", "s1", "missing"]),
        port=st.sampled_from([None, 80, 81]),
        weight=st.sampled_from([None, 0, 20, 80]),
    ),
    max_size=2,
)
_MATCHES = st.sampled_from(
    [None, [{"headers": [{"name": "x-tier", "value": "gold"}]}], [{"path": {"type": "Exact", "value": "/a/b"}}]]
)
_HTTP_ROUTES = st.builds(
    e.http_route,
    st.sampled_from(["r0", "r1"]),
    st.lists(st.builds(e.service_parent, st.sampled_from(["s0", "s1"]), port=st.sampled_from([None, 80])), max_size=2),
    st.lists(st.fixed_dictionaries({"backendRefs": _BACKENDS}, optional={"matches": _MATCHES}), max_size=2),
    ns=_NS,
)
_GRPC_ROUTES = st.builds(
    e.grpc_route,
    st.just("g0"),
    st.lists(st.builds(e.service_parent, st.sampled_from(["s0", "s1"])), max_size=1),
    st.lists(
        st.fixed_dictionaries(
            {"backendRefs": _BACKENDS, "matches": st.just([{"method": {"service": "pkg.Svc", "method": "Get"}}])}
        ),
        max_size=1,
    ),
    ns=_NS,
)
_DESTINATIONS = st.builds(
    lambda host, subset, weight: {
        "destination": {"host": host, **({"subset": subset} if subset else {})},
        **({"weight": weight} if weight is not None else {}),
    },
    st.sampled_from(["s0", "s1", "s1.b.svc.cluster.local", "ext.example.com"]),
    st.sampled_from([None, "v1", "v9"]),
    st.sampled_from([None, 50]),
)
_VIRTUAL_SERVICES = st.builds(
    e.virtual_service,
    st.sampled_from(["v0", "v1"]),
    st.sampled_from([["s0"], ["s1"], ["s0.default.svc.cluster.local", "ext.example.com"]]),
    st.lists(
        st.fixed_dictionaries(
            {"route": st.lists(_DESTINATIONS, min_size=1, max_size=2)},
            optional={"fault": st.just({"abort": {"httpStatus": 503, "percentage": {"value": 50}}})},
        ),
        max_size=2,
    ),
    ns=_NS,
)
_DESTINATION_RULES = st.builds(
    e.destination_rule,
    st.sampled_from(["d0", "d1"]),
    st.sampled_from(["s0", "s1", "ext.example.com"]),
    ns=_NS,
    subsets=st.sampled_from([[], [{"name": "v1", "labels": {"version": "1"}}]]),
    trafficPolicy=st.sampled_from([{}, {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}]),
)
_SERVICE_ENTRIES = st.builds(
    o.service_entry,
    st.just("se0"),
    ns=_NS,
    hosts=st.sampled_from([["ext.example.com"], ["s0.default.svc.cluster.local"]]),
    ports=st.just([{"number": 80, "name": "grpc"}]),
    resolution=st.sampled_from(["STATIC", "NONE"]),
    endpoints=st.sampled_from([[], [{"address": "203.0.113.9", "labels": {"version": "1"}}]]),
    workloadSelector=st.sampled_from([None, {"labels": {"app": "y"}}]),
)
_OBJECTS = st.one_of(
    _SERVICES, _PODS, _HTTP_ROUTES, _GRPC_ROUTES, _VIRTUAL_SERVICES, _DESTINATION_RULES, _SERVICE_ENTRIES
)
_OPERATIONS = st.tuples(st.sampled_from([False, False, True]), _OBJECTS)  # (delete?, object)


def _snapshot(translator: EnvoyTranslator) -> dict[str, dict[str, bytes]]:
    return {t: {n: m.SerializeToString(deterministic=True) for n, m in translator.resources(t).items()} for t in TYPES}


def _apply(mirror: dict[str, dict[str, bytes]], deltas: EnvoyDeltas) -> None:
    """Fold deltas into a client's view, checking that nothing unchanged was resent."""
    for type_url, delta in deltas.by_type_url().items():
        for name, message in delta.updated.items():
            encoded = message.SerializeToString(deterministic=True)
            assert mirror[type_url].get(name) != encoded, f"{name} resent unchanged"
            mirror[type_url][name] = encoded
        for name in delta.removed:
            del mirror[type_url][name]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    st.lists(_OBJECTS, min_size=4, max_size=16),
    st.lists(st.lists(_OPERATIONS, min_size=1, max_size=3), min_size=1, max_size=8),
)
def test_update_never_diverges_from_rebuild(initial: list[Any], batches: list[list[tuple[bool, Any]]]) -> None:
    cluster, translator = started(*initial)
    mirror = _snapshot(translator)
    for batch in batches:
        changes = [(cluster.delete if delete else cluster.apply)(obj) for delete, obj in batch]
        _apply(mirror, translator.update(cluster.store, [c for c in changes if c is not None]))
        fresh = EnvoyTranslator()
        fresh.rebuild(cluster.store)
        assert _snapshot(translator) == _snapshot(fresh)
        assert mirror == _snapshot(fresh)
    check_all({t: translator.resources(t) for t in TYPES})
