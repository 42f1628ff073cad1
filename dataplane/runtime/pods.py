"""One pod, from sandbox to deletion: a `PodWorker` per pod on this node.

The worker sets up the pod's network (retrying with back-off while CNI fails), runs a
`ContainerRunner` per container, and reports the status whenever something changed (coalesced,
only when different from what was last written). `terminate()` is the deletion path: stop the
containers (SIGTERM, SIGKILL after the grace period), CNI DEL, delete the netns, forget the pod.
`release()` is the same for a record whose pod no longer exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh import netns

from . import procs, sandbox
from .cni_config import CniConfigError, NetworkList, pod_ips
from .containers import ContainerRunner, now_rfc3339
from .pod_env import MeshEndpoints, mesh_env, token_path
from .pod_token import PodTokenKeeper, RequestToken
from .policy import Backoff
from .records import PodRecord, RecordStore
from .spec import PodSpec
from .status import pod_status, same_status

log = logging.getLogger("mesh-runtime.pods")
Json = dict[str, Any]
COALESCE_SECONDS = 0.05


class PodGone(Exception):
    """The pod no longer exists in the API (its status cannot be written)."""


@dataclass(frozen=True)
class Deps:
    """What a pod worker needs from the runtime around it."""

    store: RecordStore
    backoff: Backoff
    logs_dir: Path
    host_ip: str | None
    cni_paths: tuple[str, ...]
    cni_timeout: float
    load_network: Callable[[], NetworkList]
    publish: Callable[[PodSpec, Json], Awaitable[None]]  # raises PodGone
    mesh: MeshEndpoints | None = None  # None: containers get no MESH_* variables
    request_token: RequestToken | None = None  # None: pods get no service-account token

    def pod_dir(self, uid: str) -> Path:
        """The pod's own files (its token), beside its record."""
        return self.store.directory / uid


class PodWorker:
    """Owns one pod's sandbox, containers and status. Used from the event loop only."""

    def __init__(self, pod: PodSpec, deps: Deps, record: PodRecord | None = None, status: Json | None = None):
        self.pod = pod
        self.deps = deps
        self.rec = record or PodRecord(pod.uid, pod.namespace, pod.name, pod.netns_name, start_time=now_rfc3339())
        was_ready = {c.get("name"): bool(c.get("ready")) for c in (status or {}).get("containerStatuses") or []}
        self.runners = [
            ContainerRunner(self, c, self.rec.container(c.name), was_ready.get(c.name, False)) for c in pod.containers
        ]
        self._reported: Json | None = status
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # --- PodContext, for the runners ---------------------------------------------------------

    @property
    def netns_path(self) -> Path:
        return netns.path(self.rec.netns)

    @property
    def restart_policy(self) -> str:
        return self.pod.restart_policy

    @property
    def backoff(self) -> Backoff:
        return self.deps.backoff

    @property
    def label(self) -> str:
        return f"{self.pod.name}_{self.pod.namespace}({self.pod.uid})"

    def pod_ip(self) -> str:
        ips = pod_ips(self.rec.cni_result or {})
        return ips[0] if ips else ""

    def log_path(self, container: str) -> Path:
        return self.deps.logs_dir / f"{self.pod.namespace}_{self.pod.name}_{container}.log"

    def persist(self) -> None:
        self.deps.store.save(self.rec)

    def changed(self) -> None:
        self._dirty.set()

    # --- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the pod in the background (network, containers, status reporting)."""
        self._tasks.append(asyncio.create_task(self._report_loop(), name=f"status {self.label}"))
        self._tasks.append(asyncio.create_task(self._run(), name=f"pod {self.label}"))

    async def _run(self) -> None:
        self.persist()
        self.changed()
        await self._ensure_network()
        await self.prepare_identity()
        runs = [asyncio.create_task(r.run(), name=f"container {r.spec.name}") for r in self.runners]
        self._tasks.extend(runs)
        await asyncio.gather(*runs)
        log.info("pod %s: every container is done", self.label)

    async def _ensure_network(self) -> None:
        """Attach the pod (or check an adopted attachment), retrying with back-off on failure."""
        if self.rec.cni_result is not None and netns.exists(self.rec.netns):
            await self._check_adopted()
            return
        delay: float | None = None
        while True:
            try:
                await self._attach()
                return
            except (sandbox.SandboxError, CniConfigError) as e:
                delay = self.deps.backoff.next_delay(delay, 0.0)
                log.error("pod %s: %s (retrying in %gs)", self.label, e, delay)
                for runner in self.runners:
                    runner.waiting("ContainerCreating", f"{e} (retrying in {delay:g}s)")
                await asyncio.sleep(delay)

    async def _attach(self) -> None:
        net = self.deps.load_network()
        if self.rec.cni_conf is not None:
            # An earlier attempt (or a runtime killed during ADD) may have left part of an
            # attachment, e.g. an IP taken or an eth0 already made: DEL first, as the kubelet
            # tears a sandbox down before making it again.
            await release_network(self.rec, self.deps)
        self.rec.cni_conf, self.rec.cni_result = net.to_json(), None
        self.persist()  # before ADD: a crash from here on still leads to DEL
        att = sandbox.attachment(self.pod.uid, self.pod.namespace, self.pod.name, self.rec.netns, self.deps.cni_paths)
        self.rec.cni_result = await sandbox.set_up(net, att, self.rec.netns, self.deps.cni_timeout)
        self.persist()
        if (resolv := sandbox.resolv_conf(self.rec.cni_result, self.pod.namespace)) is not None:
            sandbox.write_resolv_conf(self.rec.netns, resolv)
        log.info("pod %s: netns %s, IPs %s", self.label, self.rec.netns, pod_ips(self.rec.cni_result))

    async def prepare_identity(self) -> None:
        """The token file (unless `automountServiceAccountToken: false`) and the MESH_* variables.

        A new pod waits for its first token, as the kubelet waits for the projected token volume;
        an adopted pod whose processes already run gets it in the background instead.
        """
        token_file = None
        if self.pod.automount_token and self.deps.request_token is not None:
            token_file = token_path(self.deps.pod_dir(self.pod.uid))
            adopted = any(r.rec.pid for r in self.runners)
            # Running containers must not be shown as waiting while an adopted pod's token is late.
            on_waiting = (lambda _message: None) if adopted else self._waiting_for_token
            keeper = PodTokenKeeper(self.pod, token_file, self.deps.request_token, on_waiting)
            if not adopted:
                await keeper.obtain()
            self._tasks.append(asyncio.create_task(keeper.keep_fresh(), name=f"token {self.label}"))
        if self.deps.mesh is None:
            return
        self.pod = self.pod.with_base_env(mesh_env(self.pod, self.pod_ip(), token_file, self.deps.mesh))
        for runner, spec in zip(self.runners, self.pod.containers, strict=True):
            runner.spec = spec  # not started yet: they start with the full environment

    def _waiting_for_token(self, message: str) -> None:
        for runner in self.runners:
            runner.waiting("ContainerCreating", message)

    async def _check_adopted(self) -> None:
        net = NetworkList.from_json(self.rec.cni_conf or {})
        att = sandbox.attachment(self.pod.uid, self.pod.namespace, self.pod.name, self.rec.netns, self.deps.cni_paths)
        problem = await sandbox.check(net, att, self.rec.cni_result or {}, self.deps.cni_timeout)
        if problem:
            log.warning("pod %s: CNI CHECK of the adopted network failed: %s", self.label, problem)

    # --- status --------------------------------------------------------------------------------

    def status(self) -> Json:
        return pod_status(
            [r.view() for r in self.runners],
            self.pod.restart_policy,
            pod_ips=pod_ips(self.rec.cni_result or {}),
            host_ip=self.deps.host_ip,
            start_time=self.rec.start_time,
            previous=self._reported,
            now=now_rfc3339(),
        )

    async def _report_loop(self) -> None:
        """Write the status when it changed; retry on API errors; stop when the pod is gone."""
        while True:
            await self._dirty.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self._dirty.clear()
            status = self.status()
            if same_status(status, self._reported):
                continue
            try:
                await self.deps.publish(self.pod, status)
                self._reported = status
            except PodGone:
                return
            except Exception as e:  # the API may be down: try again shortly
                log.warning("pod %s: status not written: %s", self.label, e)
                await asyncio.sleep(1.0)
                self._dirty.set()

    # --- end -----------------------------------------------------------------------------------

    async def detach_tasks(self) -> None:
        """Stop supervising without touching the processes (runtime shutdown: pods keep running)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def terminate(self, grace: float) -> None:
        """The pod was deleted: stop its containers, release its network, forget it."""
        await self.detach_tasks()
        await asyncio.gather(*(r.stop(grace) for r in self.runners))
        problems = await release_network(self.rec, self.deps)
        self.deps.store.remove(self.rec.uid)
        shutil.rmtree(self.deps.pod_dir(self.rec.uid), ignore_errors=True)
        log.info("pod %s: torn down%s", self.label, f" ({'; '.join(problems)})" if problems else "")


async def release_network(rec: PodRecord, deps: Deps) -> list[str]:
    """CNI DEL with the record's own conflist and cached result, then delete the netns."""
    net = None
    if rec.cni_conf:
        try:
            net = NetworkList.from_json(rec.cni_conf)
        except CniConfigError as e:
            log.error("pod %s/%s: recorded conflist unusable (%s); no CNI DEL", rec.namespace, rec.name, e)
    att = sandbox.attachment(rec.uid, rec.namespace, rec.name, rec.netns, deps.cni_paths)
    problems = await sandbox.tear_down(net, att, rec.netns, rec.cni_result, deps.cni_timeout)
    rec.cni_result = None
    return problems


async def release(rec: PodRecord, deps: Deps, grace: float) -> None:
    """Tear down a recorded pod that has no worker (gone from the API while the runtime was down,
    or `--cleanup`): stop what still runs of it, CNI DEL, delete the netns, remove the record."""
    live = [(pid, ticks) for pid, ticks in rec.pids() if procs.is_same_process(pid, ticks)]
    await asyncio.gather(*(procs.stop_group(pid, None, grace) for pid, _ in live))
    for pid, _ in live:  # a group whose leader already exited may still hold members
        procs.signal_group(pid, signal.SIGKILL)
    problems = await release_network(rec, deps)
    deps.store.remove(rec.uid)
    shutil.rmtree(deps.pod_dir(rec.uid), ignore_errors=True)
    log.info(
        "released pod %s/%s (%s)%s",
        rec.namespace,
        rec.name,
        rec.uid,
        f": {'; '.join(problems)}" if problems else "",
    )
