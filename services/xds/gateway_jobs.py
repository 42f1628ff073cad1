"""Which ingress Gateways (`gatewayClassName: istio`) a translation batch concerns, so mesh-xds
queues `mesh.gateway.reconcile` (mesh.jobs.GATEWAY_RECONCILE) for them through the same
`ReconcileQueue` as the waypoint job (waypoint_jobs.py; docs/ingress.md).

Pure: reads the store and the changes only. A Secret arrives here as a reference (no data), which
is all that is needed: the Gateways naming it in a listener's certificateRefs are reconciled.
"""

from __future__ import annotations

from collections.abc import Iterable

from .generators.view import labels_of, meta
from .model import (
    GATEWAYS,
    GRPC_ROUTES,
    HTTP_ROUTES,
    NAMESPACES,
    NODES,
    PODS,
    REFERENCE_GRANTS,
    SECRETS,
    SERVICES,
    Change,
    ConfigStore,
    Json,
)

INGRESS_CLASS = "istio"
GATEWAY_NAME = "gateway.networking.k8s.io/gateway-name"
GATEWAY_GROUP = "gateway.networking.k8s.io"

GatewayKey = tuple[str, str]


def is_ingress(gateway: Json | None) -> bool:
    return gateway is not None and (gateway.get("spec") or {}).get("gatewayClassName") == INGRESS_CLASS


def ingress_gateways(store: ConfigStore) -> set[GatewayKey]:
    """(namespace, name) of every ingress Gateway."""
    return {(meta(g).get("namespace", ""), meta(g)["name"]) for g in store.list(GATEWAYS) if is_ingress(g)}


def _secrets_of(gateway: Json) -> set[tuple[str, str]]:
    namespace = meta(gateway).get("namespace", "")
    out = set()
    for listener in (gateway.get("spec") or {}).get("listeners") or []:
        for ref in (listener.get("tls") or {}).get("certificateRefs") or []:
            out.add((ref.get("namespace") or namespace, ref.get("name", "")))
    return out


def _parents_of(route: Json) -> set[GatewayKey]:
    namespace = meta(route).get("namespace", "")
    return {
        (ref.get("namespace") or namespace, ref.get("name", ""))
        for ref in (route.get("spec") or {}).get("parentRefs") or []
        if ref.get("group", GATEWAY_GROUP) == GATEWAY_GROUP and ref.get("kind", "Gateway") == "Gateway"
    }


def _backends_of(route: Json) -> set[tuple[str, str]]:
    namespace = meta(route).get("namespace", "")
    return {
        (ref.get("namespace") or namespace, ref.get("name", ""))
        for rule in (route.get("spec") or {}).get("rules") or []
        for ref in rule.get("backendRefs") or []
    }


def _routes(store: ConfigStore) -> Iterable[Json]:
    yield from store.list(HTTP_ROUTES)
    yield from store.list(GRPC_ROUTES)


def affected_ingress_gateways(store: ConfigStore, changes: Iterable[Change]) -> set[GatewayKey]:
    """The ingress Gateways to reconcile after `changes`:
    - a Gateway that is (or was) of class `istio`;
    - the Gateways whose listeners name a changed Secret;
    - the Gateways a changed HTTPRoute/GRPCRoute names in its parentRefs (before or after);
    - the Gateway named by a changed pod's or Service's gateway-name label;
    - the Gateways with routes whose backends include a changed Service;
    - every ingress Gateway when a ReferenceGrant, a Namespace (labels select routes) or a Node
      (placement) changed.
    Only Gateways that are ingress Gateways in the store now, or were in the change, are returned.
    """
    ingress = ingress_gateways(store)
    out: set[GatewayKey] = set()
    everything = False
    for change in changes:
        kind, key = change.key.kind, (change.key.namespace, change.key.name)
        objects = [o for o in (change.old, change.new) if o is not None]
        if kind == GATEWAYS and any(is_ingress(o) for o in objects):
            out.add(key)
        elif kind == SECRETS:
            out |= {g for g in ingress if key in _secrets_of(store.get(GATEWAYS, *g) or {})}
        elif kind in (HTTP_ROUTES, GRPC_ROUTES):
            for obj in objects:
                out |= _parents_of(obj) & ingress
        elif kind in (PODS, SERVICES):
            out |= {
                (change.key.namespace, labels_of(o)[GATEWAY_NAME]) for o in objects if GATEWAY_NAME in labels_of(o)
            } & ingress
            if kind == SERVICES:
                out |= {p for r in _routes(store) if key in _backends_of(r) for p in _parents_of(r)} & ingress
        elif kind in (REFERENCE_GRANTS, NAMESPACES, NODES):
            everything = True
    return out | ingress if everything else out
