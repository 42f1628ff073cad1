"""Bringing pods into the mesh and out of it: one idempotent `sync(uid)` per pod, driven by a queue.

`sync` compares what should be (the enrollment decision) with what is (rules in the netns, what
ztunnel holds, the pod's annotation) and changes only what differs, so it is safe to run after
any event and after a restart: a pod whose rules are right sees no change at all.

Capture follows Istio's order (istio/istio cni/pkg/nodeagent/net_linux.go AddPodToMesh): rules in
the pod netns, then the ZDS Add, then the `ambient.istio.io/redirection: enabled` annotation.
Release goes the other way round: rules out first (no new connection is redirected to a
ztunnel that is letting go), then ZDS Del, then the annotation. A pod deleted from the API only
gets the ZDS Del: its netns is going away with it.

Thread-safety: event loop only; per-pod locks keep one sync per pod at a time.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Any

import httpx

from mesh.kubeclient import PODS, ApiStatusError, KubeClient

from ..redirect import apply
from ..redirect.rules import RuleSet
from .enrollment import REDIRECTION_ANNOTATION, REDIRECTION_ENABLED, Enrollment, annotated, enrolled
from .podcache import PodCache, PodEntry
from .zds import ZdsServer
from .zds_protocol import WorkloadInfo

log = logging.getLogger("mesh.cni.membership")
Json = dict[str, Any]
RETRY_FIRST, RETRY_MAX = 0.5, 30.0


class Outcome(enum.Enum):
    CAPTURED = "captured"
    RELEASED = "released"
    WAITING = "waiting"  # enrolled, but its netns is not known yet
    FAILED = "failed"  # retried with back-off


def workload_info(pod: Json) -> WorkloadInfo:
    """What ztunnel is told about a pod (it finds the workload by namespace and service account)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    return WorkloadInfo(name=meta.get("name", ""), namespace=meta.get("namespace", ""), service_account=account)


class Membership:
    """Owns the per-pod work queue and the capture / release steps."""

    def __init__(
        self,
        cache: PodCache,
        zds: ZdsServer,
        ruleset: RuleSet,
        client: KubeClient,
        namespace_of: Callable[[str], Json | None],
        workers: int = 8,
    ):
        self.cache = cache
        self.zds = zds
        self.ruleset = ruleset
        self.client = client
        self.namespace_of = namespace_of
        self.workers = workers
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._backoff: dict[str, float] = {}
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # --- the queue ------------------------------------------------------------------------------

    def enqueue(self, uid: str) -> None:
        """Ask for `uid` to be synced (coalesced with a request already waiting)."""
        if uid and uid not in self._queued:
            self._queued.add(uid)
            self._idle.clear()
            self._queue.put_nowait(uid)

    async def run(self) -> None:
        """Run the workers until cancelled."""
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        while True:
            uid = await self._queue.get()
            self._queued.discard(uid)
            self._busy += 1
            try:
                outcome = await self.sync(uid)
            except Exception:
                log.exception("sync of pod %s failed", uid)
                outcome = Outcome.FAILED
            finally:
                self._busy -= 1
                if not self._queued and not self._busy:
                    self._idle.set()
            self._after(uid, outcome)

    def _after(self, uid: str, outcome: Outcome) -> None:
        if outcome is not Outcome.FAILED:
            self._backoff.pop(uid, None)
            return
        delay = self._backoff.get(uid, RETRY_FIRST / 2) * 2
        self._backoff[uid] = min(delay, RETRY_MAX)
        asyncio.get_running_loop().call_later(self._backoff[uid], self.enqueue, uid)

    async def drained(self) -> None:
        """Wait until nothing is queued or running."""
        await self._idle.wait()

    # --- one pod --------------------------------------------------------------------------------

    def decision(self, entry: PodEntry) -> Enrollment:
        if entry.pod is None:
            return Enrollment(False, "pod-deleted")
        return enrolled(entry.pod, self.namespace_of(entry.namespace))

    async def sync(self, uid: str) -> Outcome:
        """Make one pod's capture match its enrollment (idempotent)."""
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            entry = self.cache.get(uid)
            if entry is None:
                self._locks.pop(uid, None)
                return Outcome.RELEASED
            decision = self.decision(entry)
            if decision.enrolled:
                return await self._capture(entry, decision)
            return await self._release(entry, decision)

    async def sandbox_gone(self, uid: str) -> None:
        """The plugin's DEL: ztunnel lets go now; the rules leave with the netns."""
        async with self._locks.setdefault(uid, asyncio.Lock()):
            self.cache.clear_netns(uid)
            if self.zds.has(uid):
                await self.zds.delete(uid)

    async def _capture(self, entry: PodEntry, decision: Enrollment) -> Outcome:
        assert entry.pod is not None
        netns = self.cache.netns_for(entry)
        if not netns:
            if annotated(entry.pod):
                self.zds.keep(entry.uid)  # captured before a restart; ztunnel should keep it
            log.info("pod waits for its netns", extra=self._fields(entry, decision))
            return Outcome.WAITING
        if entry.captured is not True:
            installed = await asyncio.to_thread(apply.inspect, netns, self.ruleset)
            changed = await asyncio.to_thread(apply.install, netns, self.ruleset, installed)
            entry.captured = True
            log.info("rules installed" if changed else "rules already in place", extra=self._fields(entry, decision))
        if not self.zds.holds_netns(entry.uid, netns):
            error = await self.zds.add(entry.uid, workload_info(entry.pod), netns)
            if error:
                log.warning("ztunnel did not take the pod: %s", error, extra=self._fields(entry, decision))
                return Outcome.FAILED
        if not annotated(entry.pod) and not await self._annotate(entry, REDIRECTION_ENABLED):
            return Outcome.FAILED
        return Outcome.CAPTURED

    async def _release(self, entry: PodEntry, decision: Enrollment) -> Outcome:
        if entry.pod is None:
            if self.zds.has(entry.uid):
                await self.zds.delete(entry.uid)
            self.cache.forget(entry.uid)
            self._locks.pop(entry.uid, None)
            return Outcome.RELEASED
        netns = self.cache.netns_for(entry)
        if netns and entry.captured is not False:
            installed = await asyncio.to_thread(apply.inspect, netns, self.ruleset)
            if installed.has_any(self.ruleset):
                await asyncio.to_thread(apply.remove, netns, self.ruleset, installed)
                log.info("rules removed", extra=self._fields(entry, decision))
            entry.captured = False
        if self.zds.has(entry.uid):
            await self.zds.delete(entry.uid)
        if annotated(entry.pod) and not await self._annotate(entry, None):
            return Outcome.FAILED
        return Outcome.RELEASED

    async def _annotate(self, entry: PodEntry, value: str | None) -> bool:
        """Set (or with None, remove) the redirection annotation; False when istiod refused."""
        patch = {"metadata": {"annotations": {REDIRECTION_ANNOTATION: value}}}
        try:
            entry.pod = await self.client.patch(PODS, entry.name, patch, entry.namespace)
        except ApiStatusError as e:
            if e.code == 404:
                return True  # the pod is gone; its deletion event follows
            log.warning("could not annotate pod: %s", e, extra={"pod": f"{entry.namespace}/{entry.name}"})
            return False
        except (OSError, httpx.HTTPError) as e:
            log.warning("istiod unreachable while annotating: %s", e, extra={"pod": f"{entry.namespace}/{entry.name}"})
            return False
        return True

    @staticmethod
    def _fields(entry: PodEntry, decision: Enrollment) -> dict[str, str]:
        return {"pod": f"{entry.namespace}/{entry.name}", "uid": entry.uid, "reason": decision.reason}
