"""`mesh.waypoint.reconcile(namespace, name)`: make a waypoint Gateway's Service and pods exist
(or go), then write its status. The decisions are in waypoints.py; this module reads and writes.

Idempotent and safe to run concurrently: every update carries the resourceVersion it was
computed from and creates use fixed names, so a racing run gets 409 and this one starts over from
a fresh read (a bounded number of times; then the job fails and Celery retries it).
"""

from __future__ import annotations

from typing import Any

from mesh.kubeclient import GATEWAYS, NODES, PODS, SERVICES, KubeClient

from . import waypoints as wp
from .kube_ops import apply_plan as _apply
from .kube_ops import get_or_none as _get_or_none
from .kube_ops import list_objects as _list
from .kube_ops import retry_on_conflict, write_gateway_status

Json = dict[str, Any]
ATTEMPTS = 5


async def _write_status(kube: KubeClient, gateway: Json, addresses: list[Json] | None, conditions: list[Json]) -> bool:
    return await write_gateway_status(kube, gateway, addresses, conditions, wp.OWNED_CONDITIONS)


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
    return await retry_on_conflict(
        lambda: _reconcile_once(kube, namespace, name), f"waypoint {namespace}/{name}", ATTEMPTS
    )
