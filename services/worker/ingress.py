"""What an ingress Gateway (`gatewayClassName: istio`) should turn into (pure): its Service and
pods, its status (gateway and per listener), and the status of the routes attached to it. The API
calls are in ingress_reconciler.py; the deployment plan is shared with waypoints (deployment.py).

The shapes follow docs/ingress.md. Objects are plain JSON dicts, as istiod's API serves them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import deployment as dp
from .deployment import DATAPLANE_MODE_LABEL, Json, owner_reference
from .gateway_refs import (
    GATEWAY_GROUP,
    HTTP_PROTOCOLS,
    ObjectKey,
    attach,
    backend_problem,
    certificate_refs,
    reference_permitted,
    refs_to_gateway,
    supported_kinds,
)

INGRESS_CLASS = "istio"
MANAGED_VALUE = "istio.io-gateway-controller"  # Istio's value for the gateways it deploys
CONTROLLER_NAME = "istio.io/gateway-controller"
REPLICAS_ANNOTATION = "mesh.istio.io/replicas"
MAX_REPLICAS = 16
STATUS_PORT = 15021
CONTAINER_NAME = "istio-proxy"
OWNED_CONDITIONS = {"Accepted", "Programmed"}

_meta = dp.meta_of


def is_ingress(gateway: Json | None) -> bool:
    """A Gateway this job deploys: class `istio`."""
    return gateway is not None and (gateway.get("spec") or {}).get("gatewayClassName") == INGRESS_CLASS


def pod_selector(name: str) -> str:
    return dp.pod_selector(name, MANAGED_VALUE)


def service_account(name: str) -> str:
    """Istio's default service account for a deployed gateway: `{G}-istio`."""
    return f"{name}-istio"


def key_of(obj: Json) -> ObjectKey:
    return ObjectKey(_meta(obj).get("namespace", ""), _meta(obj).get("name", ""))


# --- validation of the gateway's parameters ------------------------------------------------------


def replicas(gateway: Json) -> tuple[int | None, str]:
    """The replica count from `mesh.istio.io/replicas` (default 1), or None and why it is refused."""
    raw = (_meta(gateway).get("annotations") or {}).get(REPLICAS_ANNOTATION, "1")
    if not raw.isdigit() or int(raw) > MAX_REPLICAS:
        return None, f"annotation {REPLICAS_ANNOTATION} must be a whole number from 0 to {MAX_REPLICAS} (got {raw!r})"
    return int(raw), ""


# --- desired objects -----------------------------------------------------------------------------

_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def service_ports(gateway: Json) -> list[Json]:
    """One Service port per distinct listener port, named after its (first) listener."""
    ports: list[Json] = []
    seen: set[int] = set()
    for listener in (gateway.get("spec") or {}).get("listeners") or []:
        port = listener.get("port")
        if port in seen:
            continue
        seen.add(port)
        name = str(listener.get("name", ""))[:63]
        if not _PORT_NAME.match(name):
            name = f"port-{port}"
        ports.append({"name": name, "port": port, "protocol": "TCP"})
    return ports


def desired_service(gateway: Json) -> Json:
    # LoadBalancer-like: a ClusterIP inside the mesh range (there is no cloud load balancer).
    return dp.gateway_service(gateway, MANAGED_VALUE, service_ports(gateway))


def desired_pod(gateway: Json, pod_name: str, node: str | None) -> Json:
    meta = _meta(gateway)
    name, namespace = meta["name"], meta["namespace"]
    container_ports = [
        {"name": f"l-{p['port']}", "containerPort": p["port"], "protocol": "TCP"} for p in service_ports(gateway)
    ]
    spec: Json = {
        "serviceAccountName": service_account(name),
        "containers": [
            {
                "name": CONTAINER_NAME,
                # The waypoint's L7 engine serves ingress too (`--mode ingress`: plain listeners).
                "command": ["waypoint", "--gateway", f"{namespace}/{name}", "--mode", "ingress"],
                "ports": [*container_ports, {"name": "status-port", "containerPort": STATUS_PORT, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": STATUS_PORT}, "periodSeconds": 2},
            }
        ],
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": namespace,
            "labels": {**dp.owned_labels(name, MANAGED_VALUE), DATAPLANE_MODE_LABEL: "none"},
            "ownerReferences": [owner_reference(gateway)],
        },
        "spec": spec,
    }


def workload(gateway: Json, count: int) -> dp.Workload:
    return dp.Workload(
        MANAGED_VALUE,
        "gateway",
        count,
        desired_service(gateway),
        lambda pod_name, node: desired_pod(gateway, pod_name, node),
    )


# --- listeners -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """What the status depends on besides the Gateway: read by the reconciler, judged here."""

    secrets: dict[ObjectKey, str | None] = field(default_factory=dict)  # key -> why unusable (None: fine)
    grants: list[Json] = field(default_factory=list)
    routes: list[tuple[str, Json]] = field(default_factory=list)  # (kind, route)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    services: set[ObjectKey] = field(default_factory=set)


def certificate_keys(gateway: Json) -> list[ObjectKey]:
    """Every Secret the Gateway's listeners name (what the reconciler reads)."""
    namespace = _meta(gateway).get("namespace", "")
    out: list[ObjectKey] = []
    for listener in (gateway.get("spec") or {}).get("listeners") or []:
        out += [key for key in certificate_refs(listener, namespace) if key not in out]
    return out


def _cert_problem(gateway: Json, listener: Json, world: World) -> tuple[str, str] | None:
    """(reason, message) when a certificateRef does not resolve to a usable TLS Secret."""
    namespace = _meta(gateway).get("namespace", "")
    for ref in ((listener.get("tls") or {}).get("certificateRefs")) or []:
        group, kind = ref.get("group", ""), ref.get("kind", "Secret")
        key = ObjectKey(ref.get("namespace") or namespace, ref.get("name", ""))
        if group != "" or kind != "Secret":
            return "InvalidCertificateRef", f"certificateRef {group or 'core'}/{kind} {key} is not a core Secret"
        if not reference_permitted(world.grants, GATEWAY_GROUP, "Gateway", namespace, "", "Secret", key):
            return (
                "RefNotPermitted",
                f"certificateRef to Secret {key} is not permitted: no ReferenceGrant in namespace "
                f"{key.namespace} allows Gateways from namespace {namespace}",
            )
        if key not in world.secrets:
            return "InvalidCertificateRef", f"Secret {key} does not exist"
        problem = world.secrets[key]
        if problem:
            return "InvalidCertificateRef", f"Secret {key} is not a valid kubernetes.io/tls Secret: {problem}"
    return None


def _condition(kind: str, ok: bool, reason: str, message: str) -> Json:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def listener_status(gateway: Json, listener: Json, world: World, attached: int, programmed: bool) -> Json:
    """One `status.listeners[]` entry: supportedKinds, attachedRoutes, Accepted/ResolvedRefs/Programmed."""
    kinds, bad_kinds = supported_kinds(listener)
    protocol = str(listener.get("protocol", ""))
    if protocol.upper() not in HTTP_PROTOCOLS:
        why = f"protocol {protocol} is not supported by the ingress gateway (HTTP and HTTPS are)"
        accepted = _condition("Accepted", False, "UnsupportedProtocol", why)
        resolved = _condition("ResolvedRefs", True, "ResolvedRefs", "No errors found")
        prog = _condition("Programmed", False, "Invalid", why)
        return _entry(listener, kinds, 0, [accepted, prog, resolved])
    accepted = _condition("Accepted", True, "Accepted", "No errors found")
    problem = _cert_problem(gateway, listener, world) if protocol.upper() == "HTTPS" else None
    if problem is None and bad_kinds:
        problem = ("InvalidRouteKinds", f"unsupported route kinds: {', '.join(bad_kinds)}")
    if problem is not None:
        resolved = _condition("ResolvedRefs", False, *problem)
        prog = _condition("Programmed", False, "Invalid", f"the listener's references do not resolve: {problem[1]}")
    else:
        resolved = _condition("ResolvedRefs", True, "ResolvedRefs", "No errors found")
        prog = (
            _condition("Programmed", True, "Programmed", "No errors found")
            if programmed
            else _condition("Programmed", False, "Pending", "the gateway pods are not ready yet")
        )
    return _entry(listener, kinds, attached, [accepted, prog, resolved])


def _entry(listener: Json, kinds: list[Json], attached: int, conditions: list[Json]) -> Json:
    return {"name": listener["name"], "supportedKinds": kinds, "attachedRoutes": attached, "conditions": conditions}


def usable_listeners(gateway: Json) -> set[str]:
    """Listeners routes can attach to: HTTP and HTTPS (a listener whose certificate does not
    resolve still counts routes, as the Gateway API asks)."""
    return {
        li["name"]
        for li in (gateway.get("spec") or {}).get("listeners") or []
        if str(li.get("protocol", "")).upper() in HTTP_PROTOCOLS
    }


def attached_routes(gateway: Json, world: World) -> dict[str, int]:
    """Per listener, how many routes attach to it (a route counts once per listener)."""
    counts = {li["name"]: 0 for li in (gateway.get("spec") or {}).get("listeners") or []}
    usable = usable_listeners(gateway)
    for kind, route in world.routes:
        names: set[str] = set()
        labels = world.namespace_labels.get(_meta(route).get("namespace", ""), {})
        for ref in refs_to_gateway(route, key_of(gateway)):
            names |= set(attach(ref, route, kind, gateway, labels, usable).listeners)
        for name in names:
            counts[name] += 1
    return counts


def gateway_addresses(ready_pods: list[Json], service: Json | None) -> list[Json] | None:
    """`status.addresses`: the ready gateway pods' IPs (by pod name), then the Service's clusterIP
    (docs/ingress.md, "Reaching it from the host": the host reaches pod IPs, only mesh pods the
    clusterIP). None when there is neither."""
    values = [ip for pod in ready_pods if (ip := (pod.get("status") or {}).get("podIP"))]
    cluster_ip = ((service or {}).get("spec") or {}).get("clusterIP")
    if cluster_ip and cluster_ip != "None":
        values.append(cluster_ip)
    values = list(dict.fromkeys(values))
    return [{"type": "IPAddress", "value": v} for v in values] or None


def gateway_status(
    gateway: Json,
    world: World,
    service: Json | None,
    pods: list[Json],
    nodes: list[Json],
    count: int | None,
    refused: str,
) -> tuple[list[Json] | None, list[Json], list[Json]]:
    """(addresses, gateway conditions, listener entries) for an ingress Gateway."""
    meta = _meta(gateway)
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    owned = sorted(
        (p for p in pods if dp.owned_by_name(p, meta["name"], MANAGED_VALUE)), key=lambda p: _meta(p)["name"]
    )
    ready = [p for p in owned if dp.pod_ready(p)]
    counts = attached_routes(gateway, world)
    entries = [listener_status(gateway, li, world, counts[li["name"]], bool(ready)) for li in listeners]
    if count is None or refused:
        why = refused or "the Gateway's parameters are invalid"
        return (
            None,
            [_condition("Accepted", False, "InvalidParameters", why), _condition("Programmed", False, "Invalid", why)],
            entries,
        )
    if not usable_listeners(gateway):
        why = "no listener is valid: the ingress gateway serves HTTP and HTTPS listeners"
        accepted = _condition("Accepted", False, "ListenersNotValid", why)
    else:
        accepted = _condition("Accepted", True, "Accepted", "Resource accepted")
    addresses = gateway_addresses(ready, service)
    if ready:
        host = f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
        ports = ",".join(str(p["port"]) for p in service_ports(gateway))
        programmed = _condition(
            "Programmed", True, "Programmed", f"Resource programmed, assigned to service(s) {host}:{ports}"
        )
    elif count == 0:
        programmed = _condition(
            "Programmed", False, "Pending", f"annotation {REPLICAS_ANNOTATION} is 0: no gateway pod runs"
        )
    else:
        programmed = _condition("Programmed", False, "Pending", dp.not_ready_message(owned, nodes, "gateway"))
    return addresses, [accepted, programmed], entries


# --- routes --------------------------------------------------------------------------------------


def route_parents(
    route: Json, kind: str, gateway: Json | None, gateway_key: ObjectKey, world: World
) -> list[Json] | None:
    """The route's new `status.parents`: this controller's entries for `gateway_key` recomputed
    (removed when the Gateway is gone or not an ingress Gateway), others kept. None: no change."""
    namespace = _meta(route).get("namespace", "")
    current = ((route.get("status") or {}).get("parents")) or []

    def ours_for_gateway(entry: Json) -> bool:
        ref = entry.get("parentRef") or {}
        return (
            entry.get("controllerName") == CONTROLLER_NAME
            and refs_to_gateway({"metadata": {"namespace": namespace}, "spec": {"parentRefs": [ref]}}, gateway_key)
            != []
        )

    kept = [e for e in current if not ours_for_gateway(e)]
    mine: list[Json] = []
    if gateway is not None and is_ingress(gateway):
        labels = world.namespace_labels.get(namespace, {})
        backend = backend_problem(route, kind, world.services, world.grants)
        for ref in refs_to_gateway(route, gateway_key):
            found = attach(ref, route, kind, gateway, labels, usable_listeners(gateway))
            accepted = _condition("Accepted", bool(found.listeners), found.reason, found.message)
            resolved = (
                _condition("ResolvedRefs", False, *backend)
                if backend
                else _condition("ResolvedRefs", True, "ResolvedRefs", "All references resolved")
            )
            mine.append({"parentRef": ref, "controllerName": CONTROLLER_NAME, "conditions": [accepted, resolved]})
    if not mine and len(kept) == len(current):
        return None
    return kept + mine
