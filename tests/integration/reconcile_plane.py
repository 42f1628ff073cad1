"""A real mesh-worker against a real istiod, its jobs queued through Celery on a Redis of the test's
own (so no other worker takes them): the plane of test_waypoint_reconcile.py and
test_ingress_reconcile.py."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from celery import Celery

from mesh.jobs import QUEUE
from tests import harness


class Plane:
    """istiod, and a Celery producer that queues `job` for a Gateway."""

    def __init__(self, istiod: harness.Istiod, broker: str, job: str):
        self.istiod = istiod
        self.job = job
        self.celery = Celery("test-producer", broker=broker)
        self.celery.conf.update(task_serializer="json")

    def reconcile(self, ns: str, name: str) -> None:
        self.celery.send_task(self.job, args=[ns, name], queue=QUEUE)


@contextlib.contextmanager
def running_plane(tmp: Path, job: str, nodes: tuple[str, ...] = ("node-1",)) -> Iterator[Plane]:
    """Redis, istiod with Ready `nodes`, mesh-worker; the plane queueing `job`."""
    with harness.redis_server(tmp) as redis, harness.running_istiod(tmp, "sqlite", redis.url) as istiod:
        for node in nodes:
            harness.create_node(istiod, node)
        with istiod.client() as client:
            for node in nodes:
                ready = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}
                response = client.patch(
                    f"/api/v1/nodes/{node}/status",
                    json=ready,
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                assert response.status_code == 200, response.text
        with harness.running_worker(istiod):
            p = Plane(istiod, redis.url, job)
            yield p
            p.celery.close()


def eventually(check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """The first truthy `check()`, polled every 0.1 s for `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
