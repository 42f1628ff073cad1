"""Incremental regeneration: `Translator.update` re-translates only what a change affects, reports
exactly the resources whose bytes changed, and never diverges from a full `rebuild`."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.xds.generators import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, Deltas, Translator
from services.xds.model import AUTHORIZATION_POLICIES, PODS, SERVICES, Key
from tests.unit.xds import objects as o

pytestmark = pytest.mark.unit


def uid(name: str, ns: str = "default") -> str:
    return f"Kubernetes//Pod/{ns}/{name}"


def started(*objects: Any) -> tuple[o.Cluster, Translator]:
    cluster = o.Cluster(*objects)
    translator = Translator()
    translator.rebuild(cluster.store)
    return cluster, translator


def step(cluster: o.Cluster, translator: Translator, *objects: Any, delete: bool = False) -> Deltas:
    changes = [(cluster.delete if delete else cluster.apply)(obj) for obj in objects]
    return translator.update(cluster.store, [c for c in changes if c is not None])


def names(deltas: Deltas) -> tuple[set[str], set[str]]:
    """(updated, removed) over both type URLs."""
    updated = set(deltas.addresses.updated) | set(deltas.authorizations.updated)
    return updated, deltas.addresses.removed | deltas.authorizations.removed


PODS_ABC = [o.pod(n, ip=f"198.18.1.{i}", labels={"app": n}) for i, n in enumerate("abc", start=1)]


def test_first_rebuild_sends_everything():
    cluster = o.Cluster(*PODS_ABC, o.service("web", selector={"app": "a"}))
    deltas = Translator().rebuild(cluster.store)
    assert set(deltas.addresses.updated) == {uid("a"), uid("b"), uid("c"), "default/web.default.svc.cluster.local"}


def test_unchanged_reapply_is_an_empty_delta():
    cluster, translator = started(*PODS_ABC)
    assert step(cluster, translator, PODS_ABC[0]).empty


def test_relabelling_one_pod_touches_one_workload():
    cluster, translator = started(*PODS_ABC)
    relabelled = o.pod("b", ip="198.18.1.2", labels={"app": "b2"})  # canonical_name changes
    assert names(step(cluster, translator, relabelled)) == ({uid("b")}, set())
    assert translator.addresses[uid("b")].canonical_name == "b2"


def test_a_label_nothing_reads_changes_nothing():
    cluster, translator = started(*PODS_ABC)
    assert step(cluster, translator, o.pod("b", ip="198.18.1.2", labels={"app": "b", "team": "x"})).empty


def test_one_pod_change_translates_one_pod(monkeypatch):
    cluster, translator = started(*PODS_ABC, o.service("web", selector={"app": "a"}))
    seen = []
    original = translator._translate
    monkeypatch.setattr(translator, "_translate", lambda key: seen.append(key) or original(key))
    step(cluster, translator, o.pod("c", ip="198.18.1.99", labels={"app": "c"}))
    assert seen == [Key(PODS, "default", "c")]
    assert translator.lookup("/198.18.1.99") == {uid("c")} and translator.lookup("/198.18.1.3") == set()


def test_deleting_a_pod_removes_its_workload():
    cluster, translator = started(*PODS_ABC)
    assert names(step(cluster, translator, PODS_ABC[2], delete=True)) == (set(), {uid("c")})


def test_changing_a_service_selector_touches_the_pods_that_gained_or_lost_it():
    cluster, translator = started(*PODS_ABC, o.service("web", selector={"app": "a"}))
    assert names(step(cluster, translator, o.service("web", selector={"app": "b"}))) == ({uid("a"), uid("b")}, set())
    assert list(translator.addresses[uid("b")].services) == ["default/web.default.svc.cluster.local"]
    assert list(translator.addresses[uid("a")].services) == []


def test_labelling_a_namespace_with_a_waypoint_touches_its_services():
    objs = [*PODS_ABC, o.namespace("default"), o.gateway("wp"), o.service("web", selector={"app": "a"})]
    objs.append(o.service("api", selector={"app": "b"}, cluster_ip="198.19.0.11"))
    objs.append(o.service("web", ns="other", selector={"app": "a"}, cluster_ip="198.19.0.12"))
    cluster, translator = started(*objs)
    deltas = step(cluster, translator, o.namespace("default", {"istio.io/use-waypoint": "wp"}))
    services = {"default/web.default.svc.cluster.local", "default/api.default.svc.cluster.local"}
    assert names(deltas) == (services, set())  # a service waypoint leaves the workloads alone
    assert deltas.conditions_changed == {Key(SERVICES, "default", "web"), Key(SERVICES, "default", "api")}
    assert translator.conditions[Key(SERVICES, "default", "web")][0]["reason"] == "WaypointAccepted"


def test_a_waypoint_becoming_ready_binds_what_waited_for_it():
    labels = {"istio.io/use-waypoint": "wp"}
    cluster, translator = started(o.gateway("wp", address=None), o.service("web", labels=labels), *PODS_ABC)
    assert translator.conditions[Key(SERVICES, "default", "web")][0]["reason"] == "WaypointIsNotReady"
    deltas = step(cluster, translator, o.gateway("wp"))
    assert names(deltas) == ({"default/web.default.svc.cluster.local"}, set())
    assert translator.addresses["default/web.default.svc.cluster.local"].HasField("waypoint")


def test_a_selector_policy_touches_its_authorization_and_the_selected_workloads():
    cluster, translator = started(*PODS_ABC)
    policy = o.authorization_policy("only-a", selector={"matchLabels": {"app": "a"}}, rules=[{}])
    assert names(step(cluster, translator, policy)) == ({"default/only-a", uid("a")}, set())
    moved = o.authorization_policy("only-a", selector={"matchLabels": {"app": "c"}}, rules=[{}])
    assert names(step(cluster, translator, moved)) == ({uid("a"), uid("c")}, set())  # same Authorization
    assert names(step(cluster, translator, moved, delete=True)) == ({uid("c")}, {"default/only-a"})


def test_mesh_wide_strict_reaches_every_workload():
    cluster, translator = started(*PODS_ABC, o.pod("d", ns="other", ip="198.18.2.1"))
    strict = o.peer_authentication("default", ns="istio-system", mtls={"mode": "STRICT"})
    updated, removed = names(step(cluster, translator, strict))
    assert updated == {"istio-system/istio_converted_static_strict", uid("a"), uid("b"), uid("c"), uid("d", "other")}
    assert not removed
    assert names(step(cluster, translator, strict, delete=True))[1] == {"istio-system/istio_converted_static_strict"}


def test_changing_service_ports_touches_the_selected_pods():
    named = o.pod("a", ip="198.18.1.1", labels={"app": "a"}, ports=[{"name": "http", "containerPort": 9000}])
    cluster, translator = started(named, *PODS_ABC[1:], o.service("web", selector={"app": "a"}))
    ports = [{"name": "http", "port": 80, "targetPort": "http"}]
    deltas = step(cluster, translator, o.service("web", selector={"app": "a"}, ports=ports))
    assert names(deltas) == ({"default/web.default.svc.cluster.local", uid("a")}, set())
    assert translator.addresses[uid("a")].services["default/web.default.svc.cluster.local"].ports[0].target_port == 9000


def test_a_policy_selects_service_entry_endpoints_by_the_entrys_labels():
    entry = o.service_entry(
        "db",
        labels={"app": "db"},
        hosts=["db.example.com"],
        ports=[{"number": 5432, "name": "tcp"}],
        resolution="STATIC",
        endpoints=[{"address": "203.0.113.5"}],
    )
    cluster, translator = started(entry, *PODS_ABC)
    policy = o.authorization_policy("db-only", selector={"matchLabels": {"app": "db"}}, rules=[{}])
    endpoint = "Kubernetes/networking.istio.io/ServiceEntry/default/db/203.0.113.5"
    assert names(step(cluster, translator, policy)) == ({"default/db-only", endpoint}, set())
    assert list(translator.addresses[endpoint].authorization_policies) == ["default/db-only"]


def test_a_namespace_mode_change_reconverts_its_selector_peer_authentications():
    converted, static = "default/converted_peer_authentication_metrics", "istio-system/istio_converted_static_strict"
    exception = o.peer_authentication(
        "metrics", selector={"matchLabels": {"app": "a"}}, portLevelMtls={"8080": {"mode": "PERMISSIVE"}}
    )
    cluster, translator = started(*PODS_ABC, exception)
    assert converted not in translator.authorizations  # PERMISSIVE everywhere: no exception to make
    deltas = step(cluster, translator, o.peer_authentication("strict", mtls={"mode": "STRICT"}))
    assert names(deltas) == ({converted, uid("a"), uid("b"), uid("c")}, set())
    assert list(translator.addresses[uid("a")].authorization_policies) == [converted]
    assert list(translator.addresses[uid("b")].authorization_policies) == [static]


def test_service_wins_a_hostname_over_a_service_entry_and_gives_it_back():
    host = "web.default.svc.cluster.local"
    entry = o.service_entry("web-se", hosts=[host], addresses=["198.19.9.9"], ports=[{"number": 80, "name": "http"}])
    cluster, translator = started(entry, o.service("web", selector={"app": "a"}))
    assert translator.addresses[f"default/{host}"].name == "web"
    deltas = step(cluster, translator, o.service("web", selector={"app": "a"}), delete=True)
    assert names(deltas) == ({f"default/{host}"}, set())
    assert translator.addresses[f"default/{host}"].name == "web-se"


def waypoint_accepted(translator: Translator, name: str = "ap", ns: str = "default") -> tuple[str, str, str]:
    """(status, reason, message) of a policy's WaypointAccepted, the only condition it may have."""
    (condition,) = translator.conditions[Key(AUTHORIZATION_POLICIES, ns, name)]
    assert condition["type"] == "WaypointAccepted"
    return condition["status"], condition["reason"], condition["message"]


def targeting(*refs: tuple[str, str], name: str = "ap", ns: str = "default") -> Any:
    groups = {"Service": "", "ServiceEntry": "networking.istio.io"}
    return o.authorization_policy(
        name,
        ns=ns,
        targetRefs=[{"kind": k, "group": groups.get(k, "gateway.networking.k8s.io"), "name": n} for k, n in refs],
        rules=[{"to": [{"operation": {"methods": ["GET"]}}]}],
    )


def test_a_targetrefs_policy_follows_the_binding_of_its_service():
    policy_key = Key(AUTHORIZATION_POLICIES, "default", "ap")
    cluster, translator = started(
        o.namespace("default"), o.gateway("wp"), o.service("web"), targeting(("Service", "web"))
    )
    assert waypoint_accepted(translator)[:2] == ("False", "AncestorNotBound")
    assert not translator.authorizations  # nothing for ztunnel, and no ZtunnelAccepted

    deltas = step(cluster, translator, o.namespace("default", {"istio.io/use-waypoint": "wp"}))
    assert policy_key in deltas.conditions_changed
    assert waypoint_accepted(translator) == ("True", "Accepted", "bound to default/wp")

    step(cluster, translator, o.service("web", labels={"istio.io/use-waypoint": "none"}))  # the object's label wins
    assert waypoint_accepted(translator)[:2] == ("False", "AncestorNotBound")
    step(cluster, translator, o.service("web", labels={"istio.io/use-waypoint": "wp2"}))
    assert "not ready" in waypoint_accepted(translator)[2]
    step(cluster, translator, o.gateway("wp2", address="198.19.0.102"))  # the Service's waypoint becomes ready
    assert waypoint_accepted(translator) == ("True", "Accepted", "bound to default/wp2")
    step(cluster, translator, o.gateway("wp2", address="198.19.0.102", labels={"istio.io/waypoint-for": "workload"}))
    assert waypoint_accepted(translator)[:2] == ("False", "AncestorNotBound")

    step(cluster, translator, o.service("web"), delete=True)
    assert waypoint_accepted(translator)[:2] == ("False", "TargetNotFound")
    step(cluster, translator, o.service("web"))  # comes back, bound through the namespace again
    assert waypoint_accepted(translator) == ("True", "Accepted", "bound to default/wp")


def test_a_targetrefs_policy_follows_its_gateway():
    cluster, translator = started(targeting(("Gateway", "wp")))
    assert waypoint_accepted(translator)[:2] == ("False", "TargetNotFound")
    step(cluster, translator, o.gateway("wp", address=None))
    assert waypoint_accepted(translator)[:2] == ("False", "TargetNotFound")
    assert "not ready" in waypoint_accepted(translator)[2]
    step(cluster, translator, o.gateway("wp"))
    assert waypoint_accepted(translator) == ("True", "Accepted", "bound to default/wp")
    step(cluster, translator, o.gateway("wp", class_name="istio"))
    assert "is not a waypoint" in waypoint_accepted(translator)[2]
    step(cluster, translator, o.gateway("wp"), delete=True)
    assert waypoint_accepted(translator)[:2] == ("False", "TargetNotFound")


def test_a_policy_gaining_targetrefs_trades_ztunnel_accepted_for_waypoint_accepted():
    cluster, translator = started(o.gateway("wp"))
    step(cluster, translator, o.authorization_policy("ap", rules=[{}]))
    assert [c["type"] for c in translator.conditions[Key(AUTHORIZATION_POLICIES, "default", "ap")]] == [
        "ZtunnelAccepted"
    ]
    deltas = step(cluster, translator, targeting(("Gateway", "wp"), ("Service", "web")))
    assert deltas.authorizations.removed == {"default/ap"}
    assert waypoint_accepted(translator)[:2] == ("True", "PartiallyInvalid")
    step(cluster, translator, o.service("web", labels={"istio.io/use-waypoint": "wp"}))
    assert waypoint_accepted(translator) == ("True", "Accepted", "bound to default/wp")


def test_a_service_change_the_binding_does_not_read_leaves_targeting_policies_alone(monkeypatch):
    objs = [o.namespace("default", {"istio.io/use-waypoint": "wp"}), o.gateway("wp"), o.service("web")]
    cluster, translator = started(*objs, targeting(("Service", "web")))
    seen = []
    original = translator._translate
    monkeypatch.setattr(translator, "_translate", lambda key: seen.append(key) or original(key))
    step(cluster, translator, o.service("web", ports=[{"name": "grpc", "port": 90, "targetPort": 9090}]))
    assert seen == [Key(SERVICES, "default", "web")]
    step(cluster, translator, o.service("web", labels={"team": "x"}))  # labels: the binding reads them
    assert Key(AUTHORIZATION_POLICIES, "default", "ap") in seen


# --- the incremental path never diverges from the full one ---------------------------------------

# A small universe (few names, mostly one namespace) so that random steps often interact.
_NS = st.sampled_from(["a", "a", "a", "b"])
_WAYPOINT_LABELS = st.fixed_dictionaries(
    {},
    optional={
        "istio.io/use-waypoint": st.sampled_from(["wp", "wp2", "none"]),
        "istio.io/use-waypoint-namespace": _NS,
        "istio.io/ingress-use-waypoint": st.just("true"),
    },
)
_APP_LABELS = st.fixed_dictionaries({"app": st.sampled_from(["x", "y"])}, optional={"version": st.just("v1")})
_SELECTOR = st.one_of(st.none(), st.sampled_from([{"app": "x"}, {"app": "y"}, {"version": "v1"}, {}]))
_MODE = st.sampled_from(["STRICT", "PERMISSIVE", "DISABLE", "UNSET", "UNSET"])
_RULE = st.sampled_from(
    [
        {},
        {"from": [{"source": {"namespaces": ["a"]}}]},
        {"to": [{"operation": {"ports": ["80"], "methods": ["GET"]}}]},
        {"to": [{"operation": {"paths": ["/x"]}}]},
    ]
)


def _labels(app: dict, waypoint: dict) -> dict:
    return {**app, **waypoint}


_PODS = st.builds(
    o.pod,
    st.sampled_from(["p0", "p1"]),
    ns=_NS,
    ip=st.sampled_from([None, "198.18.1.1", "198.18.1.2"]),
    labels=st.builds(_labels, _APP_LABELS, _WAYPOINT_LABELS),
    annotations=st.sampled_from([{}, {"ambient.istio.io/redirection": "enabled"}]),
    phase=st.sampled_from(["Running", "Pending"]),
    ports=st.sampled_from([None, [{"name": "http", "containerPort": 9000}]]),
    node_name=st.sampled_from(["node-1", "node-2"]),
)
_AUTHORIZATION_POLICIES = st.builds(
    o.authorization_policy,
    st.just("ap0"),
    ns=st.sampled_from(["a", "a", "istio-system"]),
    selector=st.one_of(st.none(), st.builds(lambda s: {"matchLabels": s}, _SELECTOR.filter(bool))),
    action=st.sampled_from(["ALLOW", "DENY", "AUDIT"]),
    rules=st.lists(_RULE, min_size=1, max_size=2),
)
# targetRefs policies: every kind of target, some cross-namespace (Invalid), some missing.
_TARGET_REF = st.sampled_from(
    [
        {"kind": "Service", "group": "", "name": "s0"},
        {"kind": "Service", "group": "", "name": "s0", "namespace": "b"},
        {"kind": "ServiceEntry", "group": "networking.istio.io", "name": "se0"},
        {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "wp"},
        {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "wp2"},
        {"kind": "GatewayClass", "group": "gateway.networking.k8s.io", "name": "istio-waypoint"},
    ]
)
_TARGETED_POLICIES = st.builds(
    o.authorization_policy,
    st.sampled_from(["ap0", "ap1"]),
    ns=st.sampled_from(["a", "a", "b", "istio-system"]),
    action=st.sampled_from(["ALLOW", "DENY", "CUSTOM"]),
    targetRefs=st.lists(_TARGET_REF, min_size=1, max_size=3),
    rules=st.lists(_RULE, min_size=1, max_size=2),
)
_SERVICE_LABELS = st.builds(
    _labels, st.sampled_from([{}, {}, {"gateway.istio.io/managed": "istio.io-mesh-controller"}]), _WAYPOINT_LABELS
)
_SERVICES = st.builds(
    o.service,
    st.just("s0"),
    ns=_NS,
    selector=st.sampled_from([None, {"app": "x"}, {"app": "x"}, {"app": "y"}, {"version": "v1"}]),
    ports=st.sampled_from([None, [{"name": "http", "port": 80, "targetPort": "http"}]]),
    cluster_ip=st.sampled_from(["198.19.0.1", "None"]),
    labels=_SERVICE_LABELS,
)
_GATEWAYS = st.builds(
    o.gateway,
    st.sampled_from(["wp", "wp2"]),
    ns=_NS,
    address=st.sampled_from([None, "198.19.0.100", "198.19.0.101"]),
    labels=st.sampled_from([{}, {"istio.io/waypoint-for": "workload"}, {"istio.io/waypoint-for": "all"}]),
    class_name=st.sampled_from(["istio-waypoint", "istio-waypoint", "istio"]),
    allowed_from=st.sampled_from([None, "All"]),
)
_SERVICE_ENTRIES = st.builds(
    o.service_entry,
    st.just("se0"),
    ns=_NS,
    labels=st.builds(_labels, _APP_LABELS, _WAYPOINT_LABELS),
    hosts=st.sampled_from([["ext.example.com"], ["s0.a.svc.cluster.local"]]),
    ports=st.just([{"number": 80, "name": "http"}]),
    resolution=st.just("STATIC"),
    endpoints=st.sampled_from([[], [{"address": "203.0.113.9", "labels": {"istio.io/use-waypoint": "wp"}}]]),
)
_PEER_AUTHENTICATIONS = st.builds(
    o.peer_authentication,
    st.sampled_from(["pa0", "pa1"]),
    ns=st.sampled_from(["a", "a", "istio-system"]),
    created=st.sampled_from(["2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"]),
    selector=st.one_of(st.none(), st.just({"matchLabels": {"app": "x"}})),
    mtls=st.builds(lambda m: {"mode": m}, _MODE),
    portLevelMtls=st.sampled_from(
        [{}, {"80": {"mode": "PERMISSIVE"}}, {"90": {"mode": "STRICT"}}, {"80": {"mode": "DISABLE"}}]
    ),
)
_OBJECTS = st.one_of(
    st.builds(o.namespace, _NS, _WAYPOINT_LABELS),
    st.builds(
        o.node, st.sampled_from(["node-1", "node-2"]), st.sampled_from([{}, {"topology.kubernetes.io/zone": "z1"}])
    ),
    _PODS,
    _AUTHORIZATION_POLICIES,
    _TARGETED_POLICIES,
    _PEER_AUTHENTICATIONS,
    _SERVICES,
    _GATEWAYS,
    st.builds(
        o.workload_entry,
        st.just("we0"),
        ns=_NS,
        labels=_WAYPOINT_LABELS,
        spec_labels=_APP_LABELS,
        address=st.sampled_from(["203.0.113.1", "vm.example.com"]),
        ports=st.just({"http": 7000}),
    ),
    _SERVICE_ENTRIES,
)
_OPERATIONS = st.tuples(st.sampled_from([False, False, True]), _OBJECTS)  # (delete?, object)


def _snapshot(translator: Translator) -> dict[str, Any]:
    return {
        ADDRESS_TYPE_URL: {n: m.SerializeToString(deterministic=True) for n, m in translator.addresses.items()},
        AUTHORIZATION_TYPE_URL: {
            n: m.SerializeToString(deterministic=True) for n, m in translator.authorizations.items()
        },
        "conditions": dict(translator.conditions),
    }


def _apply(mirror: dict[str, Any], deltas: Deltas, translator: Translator) -> None:
    """Fold deltas into a client's view, checking that nothing unchanged was resent."""
    for type_url, delta in deltas.by_type_url().items():
        for name, message in delta.updated.items():
            encoded = message.SerializeToString(deterministic=True)
            assert mirror[type_url].get(name) != encoded, f"{name} resent unchanged"
            mirror[type_url][name] = encoded
        for name in delta.removed:
            del mirror[type_url][name]
    for key in deltas.conditions_changed:
        mirror["conditions"].pop(key, None)
        if key in translator.conditions:
            mirror["conditions"][key] = translator.conditions[key]


def _never_diverges(initial: list[Any], batches: list[list[tuple[bool, Any]]]) -> None:
    # Start from a populated store so that each random change meets objects it can affect.
    cluster, translator = started(*initial)
    mirror = _snapshot(translator)
    for batch in batches:
        changes = [(cluster.delete if delete else cluster.apply)(obj) for delete, obj in batch]
        deltas = translator.update(cluster.store, [c for c in changes if c is not None])
        _apply(mirror, deltas, translator)
        fresh = Translator()
        fresh.rebuild(cluster.store)
        assert _snapshot(translator) == _snapshot(fresh)
        assert mirror == _snapshot(fresh)


_SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@_SETTINGS
@given(
    st.lists(_OBJECTS, min_size=4, max_size=16),
    st.lists(st.lists(_OPERATIONS, min_size=1, max_size=3), min_size=1, max_size=8),
)
def test_update_never_diverges_from_rebuild(initial, batches):
    _never_diverges(initial, batches)


# Pods and policies only: their many inheritance rules meet far more often in a smaller universe,
# with selector policies that inherit their mode and namespace-wide ones that compete by age.
_POLICY_OBJECTS = st.one_of(
    _PODS,
    _AUTHORIZATION_POLICIES,
    _PEER_AUTHENTICATIONS,
    st.builds(
        o.peer_authentication,
        st.sampled_from(["pa0", "pa1", "pa2"]),
        ns=st.just("a"),
        selector=st.just({"matchLabels": {"app": "x"}}),
        portLevelMtls=st.sampled_from([{"80": {"mode": "PERMISSIVE"}}, {"90": {"mode": "STRICT"}}]),
    ),
    st.builds(
        o.peer_authentication,
        st.sampled_from(["pa0", "pa1", "pa2"]),
        ns=st.sampled_from(["a", "istio-system"]),
        created=st.sampled_from([None, "2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z"]),
        mtls=st.builds(lambda m: {"mode": m}, _MODE),
    ),
)


@_SETTINGS
@given(
    st.lists(_POLICY_OBJECTS, min_size=2, max_size=10),
    st.lists(st.lists(st.tuples(st.sampled_from([False, False, True]), _POLICY_OBJECTS), max_size=3), max_size=8),
)
def test_policy_updates_never_diverge_from_rebuild(initial, batches):
    _never_diverges(initial, batches)


# targetRefs policies and what their WaypointAccepted reads: the targets, the namespaces whose labels
# bind them, the waypoints they bind to. Mostly one namespace and labels that name a waypoint, so
# that most steps change some policy's condition.
_FOCUSED_WAYPOINT_LABELS = st.sampled_from(
    [
        {},
        {"istio.io/use-waypoint": "wp"},
        {"istio.io/use-waypoint": "wp"},
        {"istio.io/use-waypoint": "wp2"},
        {"istio.io/use-waypoint": "none"},
        {"istio.io/use-waypoint": "wp", "istio.io/use-waypoint-namespace": "b"},
    ]
)
_FOCUSED_TARGET_REF = st.one_of(st.just({"kind": "Service", "group": "", "name": "s0"}), _TARGET_REF)
_WAYPOINT_POLICY_OBJECTS = st.one_of(
    st.builds(
        o.authorization_policy,
        st.sampled_from(["ap0", "ap1"]),
        ns=st.sampled_from(["a", "a", "a", "istio-system"]),
        targetRefs=st.lists(_FOCUSED_TARGET_REF, min_size=1, max_size=2),
    ),
    st.builds(
        o.service,
        st.just("s0"),
        ns=st.sampled_from(["a", "a", "a", "b"]),
        labels=st.one_of(_FOCUSED_WAYPOINT_LABELS, st.just({"gateway.istio.io/managed": "istio.io-mesh-controller"})),
    ),
    st.builds(
        o.service_entry,
        st.just("se0"),
        ns=st.sampled_from(["a", "a", "b"]),
        labels=_FOCUSED_WAYPOINT_LABELS,
        hosts=st.just(["ext.example.com"]),
        ports=st.just([{"number": 80, "name": "http"}]),
        resolution=st.just("STATIC"),
    ),
    st.builds(
        o.gateway,
        st.sampled_from(["wp", "wp", "wp2"]),
        ns=st.sampled_from(["a", "a", "a", "b"]),
        address=st.sampled_from([None, "198.19.0.100", "198.19.0.100"]),
        labels=st.sampled_from([{}, {}, {"istio.io/waypoint-for": "workload"}]),
        class_name=st.sampled_from(["istio-waypoint", "istio-waypoint", "istio"]),
        allowed_from=st.sampled_from([None, "All"]),
    ),
    st.builds(o.namespace, st.sampled_from(["a", "a", "b"]), _FOCUSED_WAYPOINT_LABELS),
)


@_SETTINGS
@given(
    st.lists(_WAYPOINT_POLICY_OBJECTS, min_size=4, max_size=12),
    st.lists(
        st.lists(st.tuples(st.sampled_from([False, False, True]), _WAYPOINT_POLICY_OBJECTS), max_size=3), max_size=8
    ),
)
def test_waypoint_policy_updates_never_diverge_from_rebuild(initial, batches):
    _never_diverges(initial, batches)
