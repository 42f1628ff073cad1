"""Queueing `mesh.waypoint.reconcile` (mesh.jobs.RECONCILE_WAYPOINT) for mesh-worker after each
translation batch that touched a waypoint Gateway, a waypoint pod or a Node (docs/waypoint.md,
"Deployment").

`affected_waypoints` is pure: which Gateways a batch concerns. `ReconcileQueue` sends one job per
Gateway from its own task, like the condition queue (status_jobs.py): the push path only records
keys; when Redis is away they stay pending and are sent when it returns (the job is level-based
and idempotent, so a late or repeated run is harmless).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from celery import Celery

from mesh.jobs import QUEUE, RECONCILE_WAYPOINT

from .generators.envoy.waypoint_listeners import is_waypoint
from .generators.view import labels_of, meta
from .generators.waypoints import GATEWAY_NAME
from .model import GATEWAYS, NODES, PODS, Change, ConfigStore

log = logging.getLogger("mesh-xds.waypoint-jobs")


def waypoint_gateways(store: ConfigStore) -> set[tuple[str, str]]:
    """(namespace, name) of every waypoint Gateway."""
    return {(meta(g).get("namespace", ""), meta(g)["name"]) for g in store.list(GATEWAYS) if is_waypoint(g)}


def affected_waypoints(store: ConfigStore, changes: Iterable[Change]) -> set[tuple[str, str]]:
    """The waypoint Gateways to reconcile after `changes`: a Gateway that is (or was) a waypoint;
    the Gateway named by a changed pod's `gateway.networking.k8s.io/gateway-name` label (before or
    after); every waypoint when a Node changed (placement may have to move)."""
    out: set[tuple[str, str]] = set()
    for change in changes:
        objects = [o for o in (change.old, change.new) if o is not None]
        if change.key.kind == GATEWAYS and any(is_waypoint(o) for o in objects):
            out.add((change.key.namespace, change.key.name))
        elif change.key.kind == PODS:
            out |= {(change.key.namespace, labels_of(o)[GATEWAY_NAME]) for o in objects if GATEWAY_NAME in labels_of(o)}
        elif change.key.kind == NODES:
            out |= waypoint_gateways(store)
    return out


class ReconcileQueue:
    """Pending Gateway reconciliations (waypoint or ingress job), sent by `run()`."""

    def __init__(self, broker_url: str, queue: str = QUEUE):
        self.celery = Celery("mesh-xds", broker=broker_url)
        self.celery.conf.update(task_serializer="json", broker_connection_retry=False, broker_connection_max_retries=0)
        self.queue = queue
        self.pending: set[tuple[str, str, str]] = set()  # (job name, namespace, name)
        self._wake = asyncio.Event()
        self.sent = 0

    def note(self, gateways: set[tuple[str, str]], task: str = RECONCILE_WAYPOINT) -> None:
        """Record Gateways for job `task` (never blocks; bounded by the number of Gateways)."""
        self.pending |= {(task, namespace, name) for namespace, name in gateways}
        if self.pending:
            self._wake.set()

    def _send(self, task: str, namespace: str, name: str) -> None:
        self.celery.send_task(task, args=[namespace, name], queue=self.queue)

    async def run(self) -> None:
        delay = 0.5
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                gateway = min(self.pending)
                try:
                    await asyncio.to_thread(self._send, *gateway)
                except Exception as e:  # the broker is away: keep it and try again
                    log.warning("queueing %s failed: %s", gateway[0], e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay = 0.5
                self.sent += 1
                self.pending.discard(gateway)
