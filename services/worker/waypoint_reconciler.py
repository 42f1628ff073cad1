"""`mesh.waypoint.reconcile(namespace, name)`: make a waypoint Gateway's Service and pods exist
(or go), then write its status. The decisions are in waypoints.py; this module reads and writes.

Idempotent and safe to run concurrently: every update carries the resourceVersion it was
computed from and creates use fixed names, so a racing run gets 409 and this one starts over from
a fresh read (a bounded number of times; then the job fails and Celery retries it).
"""

from __future__ import annotations

import logging
from typing import Any

from mesh.kubeclient import GATEWAYS, NODES, PODS, SERVICES, ApiStatusError, KubeClient, Resource

from . import waypoints as wp
from .conditions import merge_conditions, needs_write, now_rfc3339

log = logging.getLogger("mesh-worker")

Json = dict[str, Any]
ATTEMPTS = 5


async def _get_or_none(kube: KubeClient, res: Resource, name: str, namespace: str) -> Json | None:
    try:
        return await kube.get(res, name, namespace)
    except ApiStatusError as e:
        if e.code == 404:
            return None
        raise


async def _list(kube: KubeClient, res: Resource, namespace: str | None, selector: str = "") -> list[Json]:
    try:
        items, _ = await kube.list(res, namespace, label_selector=selector)
    except ApiStatusError as e:
        if e.code == 404:  # the namespace is gone
            return []
        raise
    return items


async def _delete(kube: KubeClient, res: Resource, name: str, namespace: str) -> None:
    try:
        await kube.delete(res, name, namespace)
    except ApiStatusError as e:
        if e.code != 404:
            raise


async def _apply(kube: KubeClient, namespace: str, name: str, plan: wp.Plan) -> None:
    """Make the plan's writes in order; a 409 propagates so the caller starts over."""
    for pod in plan.delete_pods:
        await _delete(kube, PODS, pod, namespace)
    if plan.delete_service:
        await _delete(kube, SERVICES, name, namespace)
    if plan.create_service is not None:
        await kube.create(SERVICES, plan.create_service, namespace)
    if plan.patch_service is not None:
        await kube.patch(SERVICES, name, plan.patch_service, namespace)
    for pod_name, patch in [*plan.patch_pod_labels.items(), *plan.bind_pods.items()]:
        await kube.patch(PODS, pod_name, patch, namespace)
    for pod in plan.create_pods:
        await kube.create(PODS, pod, namespace)


async def _write_status(kube: KubeClient, gateway: Json, addresses: list[Json] | None, conditions: list[Json]) -> bool:
    """Write status.addresses and our conditions when they differ from what is stored."""
    meta = gateway["metadata"]
    status = gateway.get("status") or {}
    merged = merge_conditions(
        status.get("conditions"), conditions, wp.OWNED_CONDITIONS, meta.get("generation"), now_rfc3339()
    )
    if not needs_write(status.get("conditions"), merged) and (status.get("addresses") or None) == addresses:
        return False
    patch = {
        "metadata": {"resourceVersion": meta["resourceVersion"]},
        "status": {"conditions": merged, "addresses": addresses},
    }
    await kube.patch(GATEWAYS, meta["name"], patch, meta["namespace"], status=True)
    return True


async def _reconcile_once(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    gateway = await _get_or_none(kube, GATEWAYS, name, namespace)
    pods = await _list(kube, PODS, namespace, wp.pod_selector(name))
    service = await _get_or_none(kube, SERVICES, name, namespace)
    if not wp.is_waypoint(gateway):
        plan = wp.plan_cleanup(name, pods, service)
        await _apply(kube, namespace, name, plan)
        return {"result": "removed", "deleted_pods": len(plan.delete_pods), "deleted_service": plan.delete_service}
    assert gateway is not None
    verdict = wp.validate(gateway)
    nodes = await _list(kube, NODES, None)
    if verdict.accepted:
        waypoint_pods = await _list(kube, PODS, None, f"{wp.MANAGED_LABEL}={wp.MANAGED_VALUE}")
        plan = wp.plan_waypoint(gateway, verdict, pods, service, nodes, waypoint_pods)
    else:
        plan = wp.plan_cleanup(name, pods, service)  # a Gateway that is not accepted gets no pods
    await _apply(kube, namespace, name, plan)
    if not plan.empty:  # status from what is there now
        pods = await _list(kube, PODS, namespace, wp.pod_selector(name))
        service = await _get_or_none(kube, SERVICES, name, namespace)
    addresses, conditions = wp.desired_status(gateway, verdict, service, pods, nodes, plan.service_conflict)
    written = await _write_status(kube, gateway, addresses, conditions)
    programmed = next(c for c in conditions if c["type"] == "Programmed")
    return {
        "result": "deployed" if verdict.accepted else "refused",
        "created_pods": len(plan.create_pods),
        "deleted_pods": len(plan.delete_pods),
        "status_written": written,
        "programmed": programmed["status"],
    }


async def reconcile(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    """Bring Gateway namespace/name's waypoint to its desired state; returns what was done."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            outcome = await _reconcile_once(kube, namespace, name)
        except ApiStatusError as e:
            if e.code != 409 or attempt == ATTEMPTS:
                raise
            log.info("waypoint %s/%s: %s; reading again (attempt %d)", namespace, name, e, attempt)
            continue
        log.info("waypoint %s/%s reconciled: %s", namespace, name, outcome)
        return outcome
    raise AssertionError("unreachable")
