"""Pod status from container states, as pure functions (the kubelet's generateAPIPodStatus).

The supervisor keeps one `ContainerView` per container; `pod_status()` turns them, with the pod's
addresses and start time, into the `status` written through the status subresource. Previous
conditions are passed in so `lastTransitionTime` only moves when a condition changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .policy import should_restart

Json = dict[str, Any]
WAITING, RUNNING, TERMINATED = "waiting", "running", "terminated"


@dataclass(frozen=True)
class Terminated:
    """How one run of a container ended."""

    exit_code: int
    reason: str
    message: str = ""
    started_at: str = ""
    finished_at: str = ""
    signal: int | None = None
    container_id: str = ""

    def to_json(self) -> Json:
        out: Json = {"exitCode": self.exit_code, "reason": self.reason}
        for key, value in (
            ("message", self.message),
            ("startedAt", self.started_at),
            ("finishedAt", self.finished_at),
            ("signal", self.signal),
            ("containerID", self.container_id),
        ):
            if value:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, obj: Json) -> Terminated:
        return cls(
            exit_code=int(obj["exitCode"]),
            reason=obj.get("reason", ""),
            message=obj.get("message", ""),
            started_at=obj.get("startedAt", ""),
            finished_at=obj.get("finishedAt", ""),
            signal=obj.get("signal"),
            container_id=obj.get("containerID", ""),
        )


@dataclass(frozen=True)
class ContainerView:
    """What the status shows of one container."""

    name: str
    image: str = ""
    state: Literal["waiting", "running", "terminated"] = WAITING
    reason: str = "ContainerCreating"  # when waiting
    message: str = ""  # when waiting
    started_at: str = ""  # when running
    terminated: Terminated | None = None  # when terminated
    last_terminated: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    container_id: str = ""


def container_status(view: ContainerView) -> Json:
    """One `containerStatuses` entry."""
    if view.state == RUNNING:
        state: Json = {"running": {"startedAt": view.started_at}}
    elif view.state == TERMINATED and view.terminated is not None:
        state = {"terminated": view.terminated.to_json()}
    else:
        waiting: Json = {"reason": view.reason}
        if view.message:
            waiting["message"] = view.message
        state = {"waiting": waiting}
    out: Json = {
        "name": view.name,
        "image": view.image,
        "imageID": "",
        "ready": view.ready and view.state == RUNNING,
        "restartCount": view.restart_count,
        "started": view.state == RUNNING,
        "state": state,
        "lastState": {"terminated": view.last_terminated.to_json()} if view.last_terminated else {},
    }
    if view.container_id:
        out["containerID"] = view.container_id
    return out


def pod_phase(views: Sequence[ContainerView], restart_policy: str) -> str:
    """The kubelet's getPhase for a pod without init containers."""
    waiting = running = stopped = succeeded = 0
    for v in views:
        if v.state == RUNNING:
            running += 1
        elif v.state == TERMINATED:
            stopped += 1
            succeeded += v.terminated is not None and v.terminated.exit_code == 0
        elif v.last_terminated is not None:
            stopped += 1  # waiting to restart after an exit: it ran, so the pod is not pending
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if not stopped:
        return "Pending"
    if any(_will_restart(v, restart_policy) for v in views):
        return "Running"
    return "Succeeded" if succeeded == stopped else "Failed"


def _will_restart(view: ContainerView, restart_policy: str) -> bool:
    if view.state != TERMINATED:
        return True  # waiting in back-off: it will start again
    code = view.terminated.exit_code if view.terminated else 1
    return should_restart(restart_policy, code)


def _condition(
    cond_type: str, ok: bool, previous: dict[str, Json], now: str, reason: str = "", message: str = ""
) -> Json:
    status = "True" if ok else "False"
    before = previous.get(cond_type)
    changed = before is None or before.get("status") != status
    cond: Json = {
        "type": cond_type,
        "status": status,
        "lastTransitionTime": now if changed else before.get("lastTransitionTime", now),
    }
    if not ok and reason:
        cond["reason"] = reason
    if not ok and message:
        cond["message"] = message
    return cond


def pod_conditions(views: Sequence[ContainerView], phase: str, previous: Sequence[Json], now: str) -> list[Json]:
    """PodScheduled, Initialized, ContainersReady and Ready (no readiness gates here)."""
    prev = {c.get("type", ""): c for c in previous}
    unready = [v.name for v in views if not (v.ready and v.state == RUNNING)]
    terminal = phase in ("Succeeded", "Failed")
    reason = "PodCompleted" if terminal else "ContainersNotReady"
    message = "" if terminal else f"containers with unready status: [{' '.join(unready)}]"
    all_ready = not unready
    return [
        _condition("PodScheduled", True, prev, now),
        _condition("Initialized", True, prev, now),
        _condition("ContainersReady", all_ready, prev, now, reason, message),
        _condition("Ready", all_ready, prev, now, reason, message),
    ]


def pod_status(
    views: Sequence[ContainerView],
    restart_policy: str,
    *,
    pod_ips: Sequence[str],
    host_ip: str | None,
    start_time: str,
    previous: Json | None,
    now: str,
) -> Json:
    """The whole `status` (no null values: it goes out as a merge patch)."""
    phase = pod_phase(views, restart_policy)
    status: Json = {
        "phase": phase,
        "conditions": pod_conditions(views, phase, (previous or {}).get("conditions") or [], now),
        "containerStatuses": [container_status(v) for v in views],
        "qosClass": "BestEffort",
    }
    if start_time:
        status["startTime"] = start_time
    if pod_ips:
        status["podIP"] = pod_ips[0]
        status["podIPs"] = [{"ip": ip} for ip in pod_ips]
    if host_ip:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    return status


def same_status(a: Json | None, b: Json | None) -> bool:
    """Equal apart from condition transition times (which only move when something changed)."""

    def strip(s: Json | None) -> Json | None:
        if s is None:
            return None
        conds = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []]
        return {**s, "conditions": conds}

    return strip(a) == strip(b)
