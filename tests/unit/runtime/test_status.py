"""Pod status from container states: phase, conditions, container statuses."""

from __future__ import annotations

import pytest

from dataplane.runtime.status import (
    RUNNING,
    TERMINATED,
    WAITING,
    ContainerView,
    Terminated,
    container_status,
    pod_conditions,
    pod_phase,
    pod_status,
    same_status,
)

pytestmark = pytest.mark.unit

T0, T1 = "2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"


def running(name: str = "c", ready: bool = True) -> ContainerView:
    return ContainerView(name, state=RUNNING, started_at=T0, ready=ready)


def done(code: int, name: str = "c") -> ContainerView:
    return ContainerView(name, state=TERMINATED, terminated=Terminated(code, "Completed" if code == 0 else "Error"))


def creating(name: str = "c") -> ContainerView:
    return ContainerView(name)


def backing_off(name: str = "c") -> ContainerView:
    return ContainerView(name, state=WAITING, reason="CrashLoopBackOff", last_terminated=Terminated(1, "Error"))


@pytest.mark.parametrize(
    ("views", "policy", "phase"),
    [
        ([creating()], "Always", "Pending"),
        ([running()], "Always", "Running"),
        ([running("a"), creating("b")], "Always", "Pending"),  # kubelet: a container not yet started
        ([running("a"), done(1, "b")], "Never", "Running"),
        ([backing_off()], "Always", "Running"),
        ([done(0)], "Never", "Succeeded"),
        ([done(0)], "OnFailure", "Succeeded"),
        ([done(0, "a"), done(0, "b")], "Never", "Succeeded"),
        ([done(0, "a"), done(2, "b")], "Never", "Failed"),
        ([done(3)], "Never", "Failed"),
        ([done(3)], "OnFailure", "Running"),  # it will be restarted
        ([done(0)], "Always", "Running"),
        ([ContainerView("c", reason="NoCommand")], "Always", "Pending"),
    ],
)
def test_phase(views: list[ContainerView], policy: str, phase: str) -> None:
    assert pod_phase(views, policy) == phase


def test_container_status_running() -> None:
    s = container_status(
        ContainerView(
            "web",
            "img",
            RUNNING,
            started_at=T0,
            ready=True,
            restart_count=2,
            container_id="mesh://42",
            last_terminated=Terminated(1, "Error"),
        )
    )
    assert s == {
        "name": "web",
        "image": "img",
        "imageID": "",
        "ready": True,
        "restartCount": 2,
        "started": True,
        "state": {"running": {"startedAt": T0}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
        "containerID": "mesh://42",
    }


def test_container_status_waiting_and_terminated() -> None:
    waiting = container_status(ContainerView("c", reason="NoCommand", message="give a command"))
    assert waiting["state"] == {"waiting": {"reason": "NoCommand", "message": "give a command"}}
    assert waiting["ready"] is False and waiting["started"] is False and waiting["lastState"] == {}
    term = container_status(
        ContainerView("c", state=TERMINATED, terminated=Terminated(143, "Error", signal=15), ready=True)
    )
    assert term["state"] == {"terminated": {"exitCode": 143, "reason": "Error", "signal": 15}}
    assert term["ready"] is False  # only a running container is ready


def test_conditions_and_transition_times() -> None:
    first = pod_conditions([running(ready=False)], "Running", [], T0)
    by_type = {c["type"]: c for c in first}
    assert [c["type"] for c in first] == ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
    assert by_type["Ready"]["status"] == "False" and by_type["Ready"]["reason"] == "ContainersNotReady"
    assert by_type["Ready"]["message"] == "containers with unready status: [c]"
    second = {c["type"]: c for c in pod_conditions([running()], "Running", first, T1)}
    assert second["Ready"] == {"type": "Ready", "status": "True", "lastTransitionTime": T1}
    assert second["PodScheduled"]["lastTransitionTime"] == T0  # unchanged status keeps its time


def test_completed_pods_are_not_ready_with_reason_pod_completed() -> None:
    conds = {c["type"]: c for c in pod_conditions([done(0)], "Succeeded", [], T0)}
    assert conds["Ready"]["reason"] == "PodCompleted" and "message" not in conds["Ready"]


def test_pod_status_has_addresses_and_no_nulls() -> None:
    status = pod_status(
        [running()], "Always", pod_ips=["198.18.1.2"], host_ip="198.19.255.11", start_time=T0, previous=None, now=T0
    )
    assert status["phase"] == "Running"
    assert status["podIP"] == "198.18.1.2" and status["podIPs"] == [{"ip": "198.18.1.2"}]
    assert status["hostIP"] == "198.19.255.11" and status["startTime"] == T0

    def no_nulls(value: object) -> bool:
        if isinstance(value, dict):
            return all(v is not None and no_nulls(v) for v in value.values())
        if isinstance(value, list):
            return all(no_nulls(v) for v in value)
        return True

    assert no_nulls(status)
    bare = pod_status([creating()], "Always", pod_ips=[], host_ip=None, start_time="", previous=None, now=T0)
    assert "podIP" not in bare and "hostIP" not in bare and "startTime" not in bare


def test_same_status_ignores_transition_times_only() -> None:
    a = pod_status([running()], "Always", pod_ips=["198.18.1.2"], host_ip=None, start_time=T0, previous=None, now=T0)
    b = pod_status([running()], "Always", pod_ips=["198.18.1.2"], host_ip=None, start_time=T0, previous=None, now=T1)
    c = pod_status(
        [running(ready=False)], "Always", pod_ips=["198.18.1.2"], host_ip=None, start_time=T0, previous=None, now=T0
    )
    assert same_status(a, b) and not same_status(a, c) and not same_status(None, a)
