"""The pods this ztunnel serves, as the node agent hands them over (istio/ztunnel:
src/inpod/statemanager.rs).

- Add: a netns fd and who the pod is → listeners inside it (15001, 15006, 15008) before the Ack,
  so by the time the agent moves on the pod's captured traffic has somewhere to land. An Add for
  a pod already served from the same netns (a snapshot after a reconnect) keeps what runs; a new
  netns replaces it.
- Del: the listeners close and open connections get the drain grace.
- SnapshotSent: every pod the snapshot did not name (Add or Keep) is released.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from dataplane.cni.nodeagent.zds_protocol import WorkloadInfo
from mesh.identity import Identity, IdentityError

from ..identity import TlsContexts
from ..proxy.inbound import Inbound
from ..proxy.outbound import Outbound
from ..state import StateStore
from .pod import PodProxy

log = logging.getLogger("ztunnel.inpod")


class AddError(Exception):
    """An Add that cannot be served; the message goes back in the Ack."""


class WorkloadManager:
    """Pods by ZDS uid; every method runs on the event loop."""

    def __init__(
        self,
        store: StateStore,
        contexts: TlsContexts,
        outbound: Outbound,
        inbound: Inbound,
        *,
        trust_domain: str,
        cluster_id: str,
        grace: float,
        on_change: Callable[[], None],
    ) -> None:
        self._store = store
        self._contexts = contexts
        self._outbound = outbound
        self._inbound = inbound
        self._trust_domain = trust_domain
        self._cluster_id = cluster_id
        self._grace = grace
        self._on_change = on_change
        self.pods: dict[str, PodProxy] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def identities(self) -> set[Identity]:
        """The identities of the pods served now (their certificates must stay managed)."""
        return {pod.identity for pod in self.pods.values()}

    async def add(self, uid: str, info: WorkloadInfo, netns_fd: int) -> None:
        """Serve the pod; takes ownership of `netns_fd` (closed on error too). AddError if not."""
        existing = self.pods.get(uid)
        if existing is not None and existing.inode == os.fstat(netns_fd).st_ino:
            os.close(netns_fd)
            return
        try:
            identity = Identity(self._trust_domain, info.namespace, info.service_account or "default")
        except IdentityError as e:
            os.close(netns_fd)
            raise AddError(f"pod {info.namespace}/{info.name}: {e}") from None
        if existing is not None:
            self._release(uid)
        pod = PodProxy(uid, info, netns_fd, identity, self._store, self._cluster_id)
        try:
            self._outbound.start(pod)
            self._inbound.start(pod)
        except OSError as e:
            await pod.close(0)
            raise AddError(f"pod {pod.name}: cannot listen in its network namespace: {e}") from None
        self.pods[uid] = pod
        self._contexts.track(identity)
        log.info("pod added", extra={"pod": pod.name, "uid": uid, "identity": str(identity)})
        self._on_change()

    def delete(self, uid: str) -> None:
        """Stop serving the pod (its open connections get the grace period)."""
        if uid in self.pods:
            self._release(uid)
            self._on_change()

    def keep_only(self, named: set[str]) -> None:
        """After a snapshot: release every pod it did not name."""
        for uid in [u for u in self.pods if u not in named]:
            self._release(uid)
        self._on_change()

    def _release(self, uid: str) -> None:
        pod = self.pods.pop(uid)
        self._contexts.untrack(pod.identity)
        task = asyncio.ensure_future(pod.close(self._grace))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, grace: float) -> None:
        """Release every pod, giving open connections up to `grace` seconds."""
        pods = list(self.pods.values())
        self.pods.clear()
        await asyncio.gather(*(pod.close(grace) for pod in pods), *self._closing, return_exceptions=True)
