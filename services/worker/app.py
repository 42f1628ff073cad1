"""The Celery application of mesh-worker and its task wrappers (the jobs are in jobs.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from celery import Celery

from mesh.jobs import GATEWAY_RECONCILE, QUEUE, RECONCILE_WAYPOINT, WRITE_CONDITIONS
from mesh.kubeclient import Connection, KubeClient

from . import ingress_reconciler, jobs, waypoint_reconciler
from .settings import WorkerSettings


def connection(settings: WorkerSettings) -> Connection:
    token_file = Path(settings.token_file or settings.state_dir / "admin-token")
    if settings.istiod:
        ca = str(settings.istiod_ca_file) if settings.istiod_ca_file else None
        return Connection(settings.istiod, token_file.read_text().strip(), ca)
    return Connection.from_state_dir(settings.state_dir, token_file)


def make_celery(settings: WorkerSettings) -> Celery:
    """The app; created in __main__ (never at import time)."""
    app = Celery("mesh-worker", broker=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.queue or QUEUE,
        task_acks_late=True,  # a worker killed mid-job leaves the job queued
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
    )

    @app.task(
        name=WRITE_CONDITIONS, autoretry_for=(Exception,), retry_backoff=True, retry_backoff_max=30, max_retries=8
    )
    def write_conditions(items: list[dict[str, Any]]) -> dict[str, int]:
        async def run() -> dict[str, int]:
            async with KubeClient(connection(settings)) as kube:
                return await jobs.write_conditions(kube, items)

        return asyncio.run(run())

    @app.task(
        name=RECONCILE_WAYPOINT, autoretry_for=(Exception,), retry_backoff=True, retry_backoff_max=30, max_retries=8
    )
    def reconcile_waypoint(namespace: str, name: str) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            async with KubeClient(connection(settings)) as kube:
                return await waypoint_reconciler.reconcile(kube, namespace, name)

        return asyncio.run(run())

    @app.task(
        name=GATEWAY_RECONCILE, autoretry_for=(Exception,), retry_backoff=True, retry_backoff_max=30, max_retries=8
    )
    def reconcile_gateway(namespace: str, name: str) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            async with KubeClient(connection(settings)) as kube:
                return await ingress_reconciler.reconcile(kube, namespace, name)

        return asyncio.run(run())

    return app
