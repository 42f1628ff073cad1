"""Queueing status conditions for mesh-worker after each translation batch.

The push path only records which objects' conditions changed; a separate task sends them to the
Celery queue (a Redis round trip in a thread). When Redis is away the keys stay pending and are
sent when it returns: conditions are level-based, so sending the latest ones later is enough.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from celery import Celery

from mesh.jobs import QUEUE, WRITE_CONDITIONS
from mesh.resources.registry import default_registry

from .model import Key

log = logging.getLogger("mesh-xds.status")
BATCH = 200


class ConditionQueue:
    """Pending condition writes, sent in batches by `run()`."""

    def __init__(self, broker_url: str, queue: str = QUEUE):
        self.celery = Celery("mesh-xds", broker=broker_url)
        self.celery.conf.update(task_serializer="json", broker_connection_retry=False, broker_connection_max_retries=0)
        self.queue = queue
        self.pending: dict[Key, list[dict]] = {}
        self._wake = asyncio.Event()
        self._kinds = {k.key for k in default_registry().kinds}
        self.sent = 0

    def note(self, conditions: Mapping[Key, list[dict]], changed: set[Key]) -> None:
        """Record the current conditions of `changed` objects (an empty list removes ours)."""
        for key in changed:
            if key.kind in self._kinds:
                self.pending[key] = list(conditions.get(key, []))
        if self.pending:
            self._wake.set()

    def _send(self, items: list[dict]) -> None:
        self.celery.send_task(WRITE_CONDITIONS, args=[items], queue=self.queue)

    async def run(self) -> None:
        delay = 0.5
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                keys = list(self.pending)[:BATCH]
                items = [
                    {"kind": k.kind, "namespace": k.namespace, "name": k.name, "conditions": self.pending[k]}
                    for k in keys
                ]
                try:
                    await asyncio.to_thread(self._send, items)
                except Exception as e:  # the broker is away: keep them and try again
                    log.warning("queueing status writes failed: %s", e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay = 0.5
                self.sent += len(items)
                for key, item in zip(keys, items, strict=True):
                    if self.pending.get(key) == item["conditions"]:
                        del self.pending[key]
