"""The waypoint reconciler's decisions (services/worker/waypoints.py): objects, placement, status."""

from __future__ import annotations

from typing import Any

from services.worker import waypoints as wp

Json = dict[str, Any]


def gateway(name: str = "waypoint", ns: str = "default", uid: str = "gw-uid", **annotations: str) -> Json:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "generation": 1, "annotations": annotations},
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    }


def node(name: str, ready: bool = True, unschedulable: bool = False) -> Json:
    return {
        "metadata": {"name": name},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def existing(pod: Json, phase: str = "Pending", rv: str = "7", ready: bool | None = None) -> Json:
    out = {**pod, "metadata": {**pod["metadata"], "resourceVersion": rv}, "status": {"phase": phase}}
    if ready is not None:
        out["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return out


def test_service_and_pods_follow_the_contract() -> None:
    gw = gateway(**{wp.REPLICAS_ANNOTATION: "2", wp.SERVICE_ACCOUNT_ANNOTATION: "reviews-wp"})
    verdict = wp.validate(gw)
    assert verdict.accepted and verdict.replicas == 2 and verdict.service_account == "reviews-wp"
    plan = wp.plan_waypoint(gw, verdict, [], None, [node("node-1"), node("node-2")], [])
    svc = plan.create_service
    assert svc["spec"]["selector"] == {wp.GATEWAY_NAME_LABEL: "waypoint"}
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("mesh", 15008), ("status-port", 15021)]
    assert svc["metadata"]["labels"][wp.MANAGED_LABEL] == wp.MANAGED_VALUE
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "gw-uid"
    pods = plan.create_pods
    assert [p["metadata"]["name"] for p in pods] == ["waypoint-0", "waypoint-1"]
    assert [p["spec"]["nodeName"] for p in pods] == ["node-1", "node-2"]  # spread
    first = pods[0]
    assert first["metadata"]["labels"] == {
        wp.GATEWAY_NAME_LABEL: "waypoint",
        wp.MANAGED_LABEL: wp.MANAGED_VALUE,
        "istio.io/dataplane-mode": "none",
    }
    assert first["spec"]["serviceAccountName"] == "reviews-wp"
    assert first["spec"]["containers"][0]["command"] == ["waypoint", "--gateway", "default/waypoint"]
    assert first["metadata"]["ownerReferences"][0]["kind"] == "Gateway"


def test_placement_prefers_ready_schedulable_nodes_with_fewest_waypoints() -> None:
    busy = {"metadata": {"name": "other-0", "labels": {wp.GATEWAY_NAME_LABEL: "other"}}, "spec": {"nodeName": "a"}}
    nodes = [node("a"), node("b"), node("c", ready=False), node("d", unschedulable=True)]
    gw = gateway(**{wp.REPLICAS_ANNOTATION: "3"})
    plan = wp.plan_waypoint(gw, wp.validate(gw), [], None, nodes, [busy])
    assert [p["spec"]["nodeName"] for p in plan.create_pods] == ["b", "a", "b"]


def test_without_a_ready_node_pods_are_left_unbound() -> None:
    gw = gateway()
    plan = wp.plan_waypoint(gw, wp.validate(gw), [], None, [node("a", ready=False)], [])
    assert "nodeName" not in plan.create_pods[0]["spec"]
    status = wp.programmed(gw, wp.validate(gw), [existing(plan.create_pods[0])], [node("a", ready=False)])
    assert status["status"] == "False" and status["reason"] == "Pending"
    assert "waypoint-0 is not bound to a node (no schedulable Ready Node)" in status["message"]


def test_an_unbound_pod_is_bound_once_a_node_is_ready() -> None:
    gw = gateway()
    unbound = existing(wp.desired_pod(gw, "waypoint-0", "waypoint", None))
    service = {**wp.desired_service(gw), "metadata": {**wp.desired_service(gw)["metadata"], "resourceVersion": "2"}}
    assert wp.plan_waypoint(gw, wp.validate(gw), [unbound], service, [node("a", ready=False)], [unbound]).empty
    plan = wp.plan_waypoint(gw, wp.validate(gw), [unbound], service, [node("a")], [unbound])
    assert plan.bind_pods == {"waypoint-0": {"metadata": {"resourceVersion": "7"}, "spec": {"nodeName": "a"}}}
    assert not plan.create_pods and not plan.delete_pods


def test_a_second_run_changes_nothing_and_surplus_or_stale_pods_go() -> None:
    gw = gateway()
    nodes = [node("a")]
    first = wp.plan_waypoint(gw, wp.validate(gw), [], None, nodes, [])
    service = {**first.create_service, "spec": {**first.create_service["spec"], "clusterIP": "198.19.0.9"}}
    service["metadata"] = {**service["metadata"], "resourceVersion": "3"}
    pods = [existing(p) for p in first.create_pods]
    again = wp.plan_waypoint(gw, wp.validate(gw), pods, service, nodes, pods)
    assert again.empty
    surplus = existing(wp.desired_pod(gw, "waypoint-1", "waypoint", "a"))
    stale = existing(wp.desired_pod(gateway(uid="old-uid"), "waypoint-0", "waypoint", "a"))
    lost = existing(wp.desired_pod(gw, "waypoint-0", "waypoint", "gone-node"))
    assert wp.plan_waypoint(gw, wp.validate(gw), [*pods, surplus], service, nodes, pods).delete_pods == ["waypoint-1"]
    replaced = wp.plan_waypoint(gw, wp.validate(gw), [stale], service, nodes, [stale])
    assert replaced.delete_pods == ["waypoint-0"] and replaced.create_pods[0]["metadata"]["name"] == "waypoint-0"
    assert wp.plan_waypoint(gw, wp.validate(gw), [lost], service, nodes, [lost]).delete_pods == ["waypoint-0"]


def test_someone_elses_service_is_left_alone_and_reported() -> None:
    gw = gateway()
    theirs = {"metadata": {"name": "waypoint", "namespace": "default", "resourceVersion": "1"}, "spec": {}}
    plan = wp.plan_waypoint(gw, wp.validate(gw), [], theirs, [node("a")], [])
    assert plan.empty and "was not made for this waypoint" in plan.service_conflict
    addresses, conditions = wp.desired_status(gw, wp.validate(gw), theirs, [], [], plan.service_conflict)
    assert addresses is None and conditions[1]["reason"] == "AddressNotAssigned"


def test_cleanup_takes_only_what_it_made() -> None:
    gw = gateway()
    mine = existing(wp.desired_pod(gw, "waypoint-0", "waypoint", "a"))
    theirs = {"metadata": {"name": "x", "labels": {wp.GATEWAY_NAME_LABEL: "waypoint"}}}
    plan = wp.plan_cleanup("waypoint", [mine, theirs], None)
    assert plan.delete_pods == ["waypoint-0"] and not plan.delete_service


def test_a_gateway_without_the_hbone_listener_is_not_accepted() -> None:
    gw = gateway()
    gw["spec"]["listeners"] = [{"name": "http", "port": 80, "protocol": "HTTP"}]
    verdict = wp.validate(gw)
    assert not verdict.accepted and verdict.reason == "ListenersNotValid" and "HBONE" in verdict.message
    addresses, conditions = wp.desired_status(gw, verdict, None, [], [])
    assert addresses is None
    assert [(c["type"], c["status"]) for c in conditions] == [("Accepted", "False"), ("Programmed", "False")]
    bad = wp.validate(gateway(**{wp.REPLICAS_ANNOTATION: "many"}))
    assert not bad.accepted and bad.reason == "InvalidParameters" and "'many'" in bad.message


def test_programmed_once_a_pod_is_running_and_ready() -> None:
    gw = gateway()
    verdict = wp.validate(gw)
    pod = wp.desired_pod(gw, "waypoint-0", "waypoint", "a")
    service = {"spec": {"clusterIP": "198.19.0.9"}}
    not_ready = wp.programmed(gw, verdict, [existing(pod, "Running", ready=False)], [node("a")])
    assert not_ready["status"] == "False" and "waypoint-0 on a is Running but not Ready" in not_ready["message"]
    addresses, conditions = wp.desired_status(gw, verdict, service, [existing(pod, "Running", ready=True)], [])
    assert addresses == [{"type": "IPAddress", "value": "198.19.0.9"}]
    assert conditions[1]["status"] == "True" and "waypoint.default.svc.cluster.local:15008" in conditions[1]["message"]
    # A pod that reports no Ready condition counts once it is Running.
    assert wp.programmed(gw, verdict, [existing(pod, "Running")], [])["status"] == "True"
