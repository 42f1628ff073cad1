"""`mesh.gateway.reconcile(namespace, name)`: make an ingress Gateway's (class `istio`) Service
and pods exist (or go), then write its status and the status of the routes attached to it. The
decisions are in ingress.py and gateway_refs.py; this module reads and writes.

Secrets are read with the worker's admin token and judged here (`tls_pair_problem`); only the
verdict, which never contains secret material, reaches the Gateway's status or the log.
Idempotent and safe to run concurrently, as the waypoint job (docs/waypoint.md): writes carry the
resourceVersion they were computed from, a 409 starts the pass over.
"""

from __future__ import annotations

from typing import Any

from mesh.kubeclient import GATEWAYS, NAMESPACES, NODES, PODS, SERVICES, KubeClient, Resource
from mesh.resources.core.secret import tls_pair_problem

from . import deployment as dp
from . import ingress as ig
from .conditions import merge_conditions, needs_write, now_rfc3339
from .gateway_refs import GATEWAY_GROUP, ObjectKey
from .kube_ops import apply_plan, get_or_none, list_objects, retry_on_conflict, write_gateway_status

Json = dict[str, Any]

SECRETS = Resource("", "v1", "secrets")
HTTP_ROUTES = Resource(GATEWAY_GROUP, "v1", "httproutes")
GRPC_ROUTES = Resource(GATEWAY_GROUP, "v1", "grpcroutes")
REFERENCE_GRANTS = Resource(GATEWAY_GROUP, "v1beta1", "referencegrants")
ROUTE_RESOURCES = {"HTTPRoute": HTTP_ROUTES, "GRPCRoute": GRPC_ROUTES}


async def _read_world(kube: KubeClient, gateway: Json) -> ig.World:
    """Everything the Gateway's status depends on: its Secrets (as verdicts), the grants, the
    routes, namespace labels and the Services that exist."""
    secrets: dict[ObjectKey, str | None] = {}
    for key in ig.certificate_keys(gateway):
        secret = await get_or_none(kube, SECRETS, key.name, key.namespace)
        if secret is not None:
            secrets[key] = tls_pair_problem(secret)
    routes = [(kind, r) for kind, res in ROUTE_RESOURCES.items() for r in await list_objects(kube, res, None)]
    namespaces = await list_objects(kube, NAMESPACES, None)
    services = await list_objects(kube, SERVICES, None)
    return ig.World(
        secrets=secrets,
        grants=await list_objects(kube, REFERENCE_GRANTS, None),
        routes=routes,
        namespace_labels={dp.meta_of(n)["name"]: dp.labels_of(n) for n in namespaces},
        services={ig.key_of(s) for s in services},
    )


def _merged_parents(route: Json, parents: list[Json]) -> list[Json]:
    """Keep each condition's lastTransitionTime when its status did not flip."""
    previous = {
        (str(e.get("parentRef")), e.get("controllerName")): e for e in (route.get("status") or {}).get("parents") or []
    }
    generation = dp.meta_of(route).get("generation")
    out = []
    for entry in parents:
        if entry.get("controllerName") != ig.CONTROLLER_NAME:
            out.append(entry)
            continue
        before = previous.get((str(entry["parentRef"]), entry["controllerName"])) or {}
        owned = {c["type"] for c in entry["conditions"]}
        merged = merge_conditions(before.get("conditions"), entry["conditions"], owned, generation, now_rfc3339())
        out.append({**entry, "conditions": merged})
    return out


def _parents_differ(current: list[Json], wanted: list[Json]) -> bool:
    if len(current) != len(wanted):
        return True
    for cur, want in zip(current, wanted, strict=True):
        if cur.get("parentRef") != want.get("parentRef") or cur.get("controllerName") != want.get("controllerName"):
            return True
        if needs_write(cur.get("conditions"), want.get("conditions") or []):
            return True
    return False


async def _write_route_statuses(kube: KubeClient, gateway: Json | None, key: ObjectKey, world: ig.World) -> int:
    """Write `status.parents` of every route whose entries for this Gateway changed."""
    written = 0
    for kind, route in world.routes:
        parents = ig.route_parents(route, kind, gateway, key, world)
        if parents is None:
            continue
        parents = _merged_parents(route, parents)
        if not _parents_differ((route.get("status") or {}).get("parents") or [], parents):
            continue
        meta = dp.meta_of(route)
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": {"parents": parents}}
        await kube.patch(ROUTE_RESOURCES[kind], meta["name"], patch, meta["namespace"], status=True)
        written += 1
    return written


def _status_of(conditions: list[Json], kind: str) -> str:
    return next((c["status"] for c in conditions if c["type"] == kind), "Unknown")


async def _reconcile_once(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    gateway = await get_or_none(kube, GATEWAYS, name, namespace)
    pods = await list_objects(kube, PODS, namespace, ig.pod_selector(name))
    service = await get_or_none(kube, SERVICES, name, namespace)
    key = ObjectKey(namespace, name)
    if not ig.is_ingress(gateway):
        plan = dp.plan_cleanup(name, pods, service, ig.MANAGED_VALUE)
        await apply_plan(kube, namespace, name, plan)
        routes = [(kind, r) for kind, res in ROUTE_RESOURCES.items() for r in await list_objects(kube, res, None)]
        cleared = await _write_route_statuses(kube, None, key, ig.World(routes=routes))
        return {"result": "removed", "deleted_pods": len(plan.delete_pods), "routes_cleared": cleared}
    assert gateway is not None
    count, refused = ig.replicas(gateway)
    nodes = await list_objects(kube, NODES, None)
    accepted = count is not None and bool(ig.usable_listeners(gateway))
    if accepted:
        peers = await list_objects(kube, PODS, None, f"{dp.MANAGED_LABEL}={ig.MANAGED_VALUE}")
        plan = dp.plan_deployment(gateway, ig.workload(gateway, count or 0), pods, service, nodes, peers)
    else:
        plan = dp.plan_cleanup(name, pods, service, ig.MANAGED_VALUE)  # not accepted: no pods
    await apply_plan(kube, namespace, name, plan)
    if not plan.empty:  # status from what is there now
        pods = await list_objects(kube, PODS, namespace, ig.pod_selector(name))
        service = await get_or_none(kube, SERVICES, name, namespace)
    world = await _read_world(kube, gateway)
    addresses, conditions, listeners = ig.gateway_status(
        gateway, world, None if plan.service_conflict else service, pods, nodes, count, refused
    )
    if plan.service_conflict:
        conditions = [c for c in conditions if c["type"] != "Programmed"]
        conditions.append(
            {"type": "Programmed", "status": "False", "reason": "AddressNotAssigned", "message": plan.service_conflict}
        )
    written = await write_gateway_status(kube, gateway, addresses, conditions, ig.OWNED_CONDITIONS, listeners)
    routes_written = await _write_route_statuses(kube, gateway, key, world)
    return {
        "result": "deployed" if accepted else "refused",
        "created_pods": len(plan.create_pods),
        "deleted_pods": len(plan.delete_pods),
        "status_written": written,
        "routes_written": routes_written,
        "programmed": _status_of(conditions, "Programmed"),
        "resolved_refs": {e["name"]: _status_of(e["conditions"], "ResolvedRefs") for e in listeners},
    }


async def reconcile(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    """Bring ingress Gateway namespace/name to its desired state; returns what was done."""
    return await retry_on_conflict(lambda: _reconcile_once(kube, namespace, name), f"gateway {namespace}/{name}")
