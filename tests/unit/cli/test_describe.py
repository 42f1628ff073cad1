"""`meshctl x describe`: binding and policy resolution, certificate lookup, rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import bindings, describe
from services.xds.model import DESTINATION_RULES, HTTP_ROUTES, NAMESPACES, PEER_AUTHENTICATIONS, PODS, VIRTUAL_SERVICES
from tests.unit.cli.diagnostics_objects import bookinfo, namespace, pod, policy, store_of

GET_ONLY = {
    "targetRefs": [{"kind": "Service", "group": "", "name": "reviews"}],
    "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}],
}


def test_pod_facts_show_waypoint_and_both_policy_layers(tmp_path: Path) -> None:
    store = bookinfo(
        policy("allow-get", GET_ONLY),
        policy("ns-wide", {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["x"]}}]}]}),
        policy("selects", {"selector": {"matchLabels": {"app": "reviews"}}, "rules": [{}]}),
        policy("mesh", {}, ns="istio-system"),
        policy("other-pod", {"selector": {"matchLabels": {"app": "sleep"}}}),
    )
    facts = describe.describe(store, "pod", "default", "reviews-0", tmp_path)
    assert facts["identity"] == "spiffe://cluster.local/ns/default/sa/reviews"
    assert facts["enrolled"] and facts["services"] == ["default/reviews"]
    assert facts["waypoints"][1] == {
        "for": "Service default/reviews",
        "via": "service label",
        "waypoint": "default/waypoint",
        "bound": True,
        "state": "Programmed=True",
    }
    assert [(p["policy"], p["action"], p["why"]) for p in facts["l4Policies"]] == [
        ("default/ns-wide", "DENY", "namespace-wide"),
        ("istio-system/mesh", "ALLOW", "mesh-wide (root namespace)"),
        ("default/selects", "ALLOW", "selects the pod"),
    ]
    assert [p["policy"] for p in facts["l7Policies"]] == ["default/allow-get"]
    assert "node-1" in facts["certificate"]["skipped"]  # no node.json in this state directory
    text = describe.render(facts, "pod", "text")
    assert "   Service default/reviews: default/waypoint via service label (Programmed=True)" in text
    assert "   default/allow-get   ALLOW   (targets Service reviews)" in text


def test_namespace_label_binding_and_pending_waypoint() -> None:
    labels = {"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "wp"}
    store = store_of({NAMESPACES: [namespace("default", **labels)], PODS: [pod("p", "198.18.1.1", app="a")]})
    views = bindings.pod_waypoints(store, store.get(PODS, "default", "p"))
    assert views[0].via == "namespace label" and views[0].waypoint == "default/wp" and not views[0].bound
    assert "WaypointIsNotReady" in views[0].detail


def test_peer_authentication_mode() -> None:
    strict = {"metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}
    store = store_of({PODS: [pod("p", "198.18.1.1")], PEER_AUTHENTICATIONS: [strict]})
    assert bindings.peer_authentication_mode(store, store.get(PODS, "default", "p")) == "STRICT"
    assert bindings.peer_authentication_mode(store_of({}), pod("p", "198.18.1.1")) == "PERMISSIVE"


def test_certificate_from_a_config_dump() -> None:
    dump = {
        "certificates": [
            {
                "identity": "spiffe://cluster.local/ns/default/sa/reviews",
                "state": "Available",
                "certChain": [{"serialNumber": "abc", "expirationTime": "2030-01-01T00:00:00Z", "validFrom": "x"}],
            }
        ]
    }
    cert = describe.certificate_of(dump, "spiffe://cluster.local/ns/default/sa/reviews")
    assert cert == {"state": "Available", "serial": "abc", "notBefore": "x", "notAfter": "2030-01-01T00:00:00Z"}
    assert "skipped" in describe.certificate_of(dump, "spiffe://cluster.local/ns/default/sa/other")


def test_service_facts(tmp_path: Path) -> None:
    store = bookinfo(policy("allow-get", GET_ONLY))
    facts = describe.describe(store, "service", "default", "reviews", tmp_path)
    assert facts["vip"] == "198.18.100.5"
    assert facts["endpoints"] == [{"pod": "default/reviews-0", "ip": "198.18.1.20", "ready": True, "enrolled": True}]
    assert facts["waypoint"]["waypoint"] == "default/waypoint"
    assert [p["policy"] for p in facts["l7Policies"]] == ["default/allow-get"]
    text = describe.render(facts, "service", "text")
    assert "   Port: http 9080/TCP targets pod port 9080" in text
    with pytest.raises(describe.DescribeError, match='service "nope" not found in namespace default'):
        describe.describe(store, "service", "default", "nope", tmp_path)


def test_service_routes_and_destination_rules(tmp_path: Path) -> None:
    store = bookinfo()
    route = {
        "metadata": {"name": "split", "namespace": "default"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "reviews"}]},
    }
    vs = {"metadata": {"name": "vs", "namespace": "default"}, "spec": {"hosts": ["reviews"]}}
    dr = {"metadata": {"name": "dr", "namespace": "other"}, "spec": {"host": "reviews.default.svc.cluster.local"}}
    unrelated = {"metadata": {"name": "x", "namespace": "default"}, "spec": {"hosts": ["ratings"]}}
    store.replace_kind(HTTP_ROUTES, [route], 2)
    store.replace_kind(VIRTUAL_SERVICES, [vs, unrelated], 2)
    store.replace_kind(DESTINATION_RULES, [dr], 2)
    facts = describe.describe(store, "service", "default", "reviews", tmp_path)
    assert facts["routes"] == ["HTTPRoute default/split", "VirtualService default/vs"]
    assert facts["destinationRules"] == ["DestinationRule other/dr"]
