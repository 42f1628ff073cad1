"""The API calls the Gateway deployment jobs share: tolerant reads and deletes, a deployment
plan's writes in order, and a Gateway status write made only when something changed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mesh.kubeclient import GATEWAYS, PODS, SERVICES, ApiStatusError, KubeClient, Resource

from .conditions import merge_conditions, needs_write, now_rfc3339
from .deployment import Plan

log = logging.getLogger("mesh-worker")

Json = dict[str, Any]


async def get_or_none(kube: KubeClient, res: Resource, name: str, namespace: str) -> Json | None:
    try:
        return await kube.get(res, name, namespace)
    except ApiStatusError as e:
        if e.code == 404:
            return None
        raise


async def list_objects(kube: KubeClient, res: Resource, namespace: str | None, selector: str = "") -> list[Json]:
    try:
        items, _ = await kube.list(res, namespace, label_selector=selector)
    except ApiStatusError as e:
        if e.code == 404:  # the namespace is gone
            return []
        raise
    return items


async def delete_if_present(kube: KubeClient, res: Resource, name: str, namespace: str) -> None:
    try:
        await kube.delete(res, name, namespace)
    except ApiStatusError as e:
        if e.code != 404:
            raise


async def apply_plan(kube: KubeClient, namespace: str, name: str, plan: Plan) -> None:
    """Make the plan's writes in order; a 409 propagates so the caller starts over."""
    for pod in plan.delete_pods:
        await delete_if_present(kube, PODS, pod, namespace)
    if plan.delete_service:
        await delete_if_present(kube, SERVICES, name, namespace)
    if plan.create_service is not None:
        await kube.create(SERVICES, plan.create_service, namespace)
    if plan.patch_service is not None:
        await kube.patch(SERVICES, name, plan.patch_service, namespace)
    for pod_name, patch in [*plan.patch_pod_labels.items(), *plan.bind_pods.items()]:
        await kube.patch(PODS, pod_name, patch, namespace)
    for pod in plan.create_pods:
        await kube.create(PODS, pod, namespace)


async def write_gateway_status(
    kube: KubeClient,
    gateway: Json,
    addresses: list[Json] | None,
    conditions: list[Json],
    owned: set[str],
    listeners: list[Json] | None = None,
) -> bool:
    """Write status.addresses, the `owned` conditions (others' are kept) and, when given,
    status.listeners, if they differ from what is stored. Carries the resourceVersion read."""
    meta = gateway["metadata"]
    status = gateway.get("status") or {}
    now = now_rfc3339()
    merged = merge_conditions(status.get("conditions"), conditions, owned, meta.get("generation"), now)
    wanted: Json = {"conditions": merged, "addresses": addresses}
    changed = needs_write(status.get("conditions"), merged) or (status.get("addresses") or None) != addresses
    if listeners is not None:
        previous = {entry.get("name"): entry for entry in status.get("listeners") or []}
        wanted["listeners"] = [
            {
                **entry,
                "conditions": merge_conditions(
                    (previous.get(entry["name"]) or {}).get("conditions"),
                    entry["conditions"],
                    {c["type"] for c in entry["conditions"]},
                    meta.get("generation"),
                    now,
                ),
            }
            for entry in listeners
        ]
        changed = changed or _listeners_differ(status.get("listeners") or [], wanted["listeners"])
    if not changed:
        return False
    patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": wanted}
    await kube.patch(GATEWAYS, meta["name"], patch, meta["namespace"], status=True)
    return True


def _listeners_differ(current: list[Json], wanted: list[Json]) -> bool:
    if [e.get("name") for e in current] != [e["name"] for e in wanted]:
        return True
    for cur, want in zip(current, wanted, strict=True):
        if {k: v for k, v in cur.items() if k != "conditions"} != {k: v for k, v in want.items() if k != "conditions"}:
            return True
        if needs_write(cur.get("conditions"), want["conditions"]):
            return True
    return False


async def retry_on_conflict(
    once: Callable[[], Awaitable[dict[str, Any]]], what: str, attempts: int = 5
) -> dict[str, Any]:
    """Run a reconcile pass; on a 409 (another run won a race) read again and redo it, up to
    `attempts` times, then let the error through so Celery retries the job."""
    for attempt in range(1, attempts + 1):
        try:
            outcome = await once()
        except ApiStatusError as e:
            if e.code != 409 or attempt == attempts:
                raise
            log.info("%s: %s; reading again (attempt %d)", what, e, attempt)
            continue
        log.info("%s reconciled: %s", what, outcome)
        return outcome
    raise AssertionError("unreachable")
