"""The jobs: each is idempotent and safe to retry.

`write_conditions` writes the status conditions mesh-xds computed (ZtunnelAccepted on
AuthorizationPolicies, istio.io/WaypointBound on Services and Pods) through istiod's status
subresource, only when they differ from what is stored.
"""

from __future__ import annotations

import logging
from typing import Any

from mesh.kubeclient import ApiStatusError, KubeClient, Resource
from mesh.resources.registry import default_registry

from .conditions import merge_conditions, needs_write, now_rfc3339

log = logging.getLogger("mesh-worker")

# The condition types mesh-xds owns; others on the same objects (e.g. Gateway ones) are left alone.
XDS_CONDITION_TYPES = {"ZtunnelAccepted", "WaypointAccepted", "istio.io/WaypointBound"}


def _resource(kind_key: str) -> Resource:
    kind = default_registry().by_key(kind_key)
    if kind is None:
        raise ValueError(f"unknown kind {kind_key}")
    return Resource(kind.group, kind.version, kind.plural, kind.namespaced)


async def write_conditions(kube: KubeClient, items: list[dict[str, Any]]) -> dict[str, int]:
    """Write each item's conditions; returns counts of written, unchanged and gone objects."""
    counts = {"written": 0, "unchanged": 0, "gone": 0}
    for item in items:
        res = _resource(item["kind"])
        ns = item.get("namespace") or None
        try:
            current = await kube.get(res, item["name"], ns)
        except ApiStatusError as e:
            if e.code == 404:
                counts["gone"] += 1
                continue
            raise
        status = current.get("status") or {}
        merged = merge_conditions(
            status.get("conditions"),
            item["conditions"],
            XDS_CONDITION_TYPES,
            current["metadata"].get("generation"),
            now_rfc3339(),
        )
        if not needs_write(status.get("conditions"), merged):
            counts["unchanged"] += 1
            continue
        patch = {
            "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            "status": {"conditions": merged},
        }
        try:
            await kube.patch(res, item["name"], patch, ns, status=True)
            counts["written"] += 1
        except ApiStatusError as e:
            if e.code == 409:  # changed meanwhile: the next batch (or a retry) writes the fresh result
                raise
            if e.code != 404:
                raise
            counts["gone"] += 1
    return counts
