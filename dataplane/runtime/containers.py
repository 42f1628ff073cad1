"""One container's life inside a pod: start, watch, probe, restart with back-off, or adopt.

A `ContainerRunner` owns the container's record entry and the `ContainerView` the status is
computed from. It calls back into its pod (`PodContext`) to persist the record and to say that
the status changed; it never talks to the API itself.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import procs
from .policy import Backoff, exit_code_of, should_restart, termination_reason
from .probes import ProbeTracker, run_probe
from .records import ContainerRecord
from .spec import ContainerSpec
from .status import RUNNING, TERMINATED, WAITING, ContainerView, Terminated

log = logging.getLogger("mesh-runtime.containers")
UNKNOWN_EXIT = 137  # what the kubelet reports when a container's exit status cannot be found


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class PodContext(Protocol):
    """What a container runner needs from its pod."""

    netns_path: Path
    restart_policy: str
    backoff: Backoff
    label: str  # "{name}_{namespace}({uid})", the kubelet's way of naming a pod in messages

    def pod_ip(self) -> str: ...
    def log_path(self, container: str) -> Path: ...
    def persist(self) -> None: ...
    def changed(self) -> None: ...


@dataclass
class Live:
    """The running process of a container (a child, or adopted: then `popen` is None)."""

    pid: int
    popen: subprocess.Popen | None
    started_mono: float


class ContainerRunner:
    """Runs one container until it is done for good or the pod is deleted (task cancelled)."""

    def __init__(self, pod: PodContext, spec: ContainerSpec, rec: ContainerRecord, was_ready: bool = False):
        """`was_ready`: the readiness last reported, kept for an adopted process until its probe
        says otherwise (as the kubelet keeps readiness across its own restarts)."""
        self.pod = pod
        self.was_ready = was_ready
        self.spec = spec
        self.rec = rec
        self.live: Live | None = None
        self.state = WAITING
        self.reason, self.message = "ContainerCreating", ""
        self.ready = False
        self._probe_task: asyncio.Task | None = None

    def view(self) -> ContainerView:
        """The container as the status shows it."""
        return ContainerView(
            name=self.spec.name,
            image=self.spec.image,
            state=self.state,  # type: ignore[arg-type]
            reason=self.reason,
            message=self.message,
            started_at=self.rec.started_at,
            terminated=self.rec.terminated,
            last_terminated=self.rec.last_terminated,
            restart_count=self.rec.restart_count,
            ready=self.ready,
            container_id=f"mesh://{self.live.pid}" if self.live else "",
        )

    def waiting(self, reason: str, message: str = "") -> None:
        """Show the container as waiting (before it can start)."""
        self.state, self.reason, self.message = WAITING, reason, message
        self.pod.changed()

    async def run(self) -> None:
        """The container's whole life; returns when it will not run again."""
        if self.spec.problem:
            log.warning("%s/%s cannot run: %s", self.pod.label, self.spec.name, self.spec.problem[1])
            self.waiting(*self.spec.problem)
            return
        if self.rec.terminated is not None:  # finished for good before the runtime restarted
            self.state = TERMINATED
            self.pod.changed()
            return
        try:
            if not await self._resume():
                return
            while True:
                if self.live is None:
                    if not await self._start_or_fail():
                        return
                    continue  # started, or failed to and waited out the back-off
                code = await procs.wait_exit(self.live.pid, self.live.popen)
                if not await self._exited(self._termination(code)):
                    return
        finally:
            self._stop_probe()

    async def _resume(self) -> bool:
        """Pick up what the record says (after a runtime restart). False when done for good."""
        if self.rec.pid is None:
            if self.rec.last_terminated is not None and self.rec.backoff:
                await self._back_off(self.rec.backoff)  # it was waiting to restart
            return True
        pid, ticks = self.rec.pid, self.rec.start_ticks
        if procs.is_same_process(pid, ticks):
            self.live = Live(pid, None, time.monotonic())
            self._running(ready=self.was_ready)
            log.info("adopted %s/%s (pid %d)", self.pod.label, self.spec.name, pid)
            return True
        lost = Terminated(
            UNKNOWN_EXIT,
            "ContainerStatusUnknown",
            "the container exited while mesh-runtime was not running; its exit status is unknown",
            started_at=self.rec.started_at,
            finished_at=now_rfc3339(),
            container_id=f"mesh://{pid}",
        )
        return await self._exited(lost)

    async def _start_or_fail(self) -> bool:
        """Start a process. A failed start counts as an exit (StartError, exit code 128, as the
        container runtimes report it) and goes through the restart policy. False when done."""
        if self.rec.last_terminated is not None:
            self.rec.restart_count += 1
        self.rec.started_at = now_rfc3339()
        try:
            popen = procs.start_container(self.spec, self.pod.netns_path, self.pod.log_path(self.spec.name))
        except procs.StartError as e:
            log.warning("%s/%s: %s", self.pod.label, self.spec.name, e)
            failed = Terminated(128, "StartError", str(e), self.rec.started_at, now_rfc3339())
            return await self._exited(failed)
        self.live = Live(popen.pid, popen, time.monotonic())
        self.rec.pid, self.rec.start_ticks = popen.pid, procs.start_ticks(popen.pid)
        self._running()
        log.info("started %s/%s (pid %d)", self.pod.label, self.spec.name, popen.pid)
        return True

    def _running(self, ready: bool = False) -> None:
        self.state, self.reason, self.message = RUNNING, "", ""
        self.ready = ready or self.spec.readiness is None
        self.pod.persist()
        self.pod.changed()
        if self.spec.readiness is not None:
            self._probe_task = asyncio.create_task(self._probe_loop())

    def _termination(self, returncode: int | None) -> Terminated:
        assert self.live is not None
        finished = now_rfc3339()
        if returncode is None:
            code = procs.zombie_exit_code(self.live.pid)
            if code is None:
                return Terminated(
                    UNKNOWN_EXIT,
                    "ContainerStatusUnknown",
                    "adopted after a mesh-runtime restart: its exit status went to its former parent",
                    self.rec.started_at,
                    finished,
                    container_id=f"mesh://{self.live.pid}",
                )
            returncode = code
        exit_code, sig = exit_code_of(returncode)
        return Terminated(
            exit_code, termination_reason(exit_code), "", self.rec.started_at, finished, sig, f"mesh://{self.live.pid}"
        )

    async def _exited(self, term: Terminated) -> bool:
        """Record an exit; wait out the back-off and return True when it restarts."""
        ran_for = time.monotonic() - self.live.started_mono if self.live else 0.0
        self._stop_probe()
        self.live, self.ready = None, False
        self.rec.pid = self.rec.start_ticks = None
        log.info("%s/%s exited: %s (exit code %d)", self.pod.label, self.spec.name, term.reason, term.exit_code)
        if not should_restart(self.pod.restart_policy, term.exit_code):
            self.rec.terminated = term
            self.state = TERMINATED
            self.pod.persist()
            self.pod.changed()
            return False
        self.rec.last_terminated = term
        self.rec.backoff = self.pod.backoff.next_delay(self.rec.backoff, ran_for)
        await self._back_off(self.rec.backoff)
        return True

    async def _back_off(self, delay: float) -> None:
        self.state, self.reason = WAITING, "CrashLoopBackOff"
        self.message = f"back-off {delay:g}s restarting failed container={self.spec.name} pod={self.pod.label}"
        self.pod.persist()
        self.pod.changed()
        await asyncio.sleep(delay)

    async def _probe_loop(self) -> None:
        probe = self.spec.readiness
        assert probe is not None
        tracker = ProbeTracker(probe.success_threshold, probe.failure_threshold, ready=self.ready)
        await asyncio.sleep(probe.initial_delay)
        while True:
            ok, why = await run_probe(self.pod.netns_path, probe, self.spec, self.pod.pod_ip())
            if tracker.observe(ok):
                self.ready = tracker.ready
                log.info("%s/%s ready: %s%s", self.pod.label, self.spec.name, self.ready, f" ({why})" if why else "")
                self.pod.changed()
            await asyncio.sleep(probe.period)

    def _stop_probe(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            self._probe_task = None

    async def stop(self, grace: float) -> None:
        """SIGTERM the running process group, SIGKILL after `grace` (pod deletion)."""
        self._stop_probe()
        live = self.live
        if live is None:
            return
        killed = await procs.stop_group(live.pid, live.popen, grace)
        log.info(
            "stopped %s/%s (pid %d)%s", self.pod.label, self.spec.name, live.pid, " with SIGKILL" if killed else ""
        )
        self.live = None
        self.rec.pid = self.rec.start_ticks = None
