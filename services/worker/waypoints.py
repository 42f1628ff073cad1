"""What a waypoint Gateway should turn into (pure): its Service, its pods and their nodes, what to
delete, and the Gateway's status. The API calls are in waypoint_reconciler.py.

The shapes follow docs/waypoint.md, "Deployment (contract)". Objects are plain JSON dicts, as
they come from and go to istiod's API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
WAYPOINT_CLASS = "istio-waypoint"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
MANAGED_LABEL = "gateway.istio.io/managed"
MANAGED_VALUE = "istio.io-mesh-controller"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
REPLICAS_ANNOTATION = "mesh.istio.io/replicas"
SERVICE_ACCOUNT_ANNOTATION = "gateway.istio.io/service-account"
DEFAULT_SERVICE_ACCOUNT = "waypoint"  # Istio's name
MAX_REPLICAS = 16  # a bound on what one annotation can ask the job to create
HBONE_PORT = 15008
STATUS_PORT = 15021
CONTAINER_NAME = "istio-proxy"
OWNED_CONDITIONS = {"Accepted", "Programmed"}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _meta(obj: Json) -> Json:
    return obj.get("metadata") or {}


def _labels(obj: Json) -> dict[str, str]:
    return _meta(obj).get("labels") or {}


def is_waypoint(gateway: Json | None) -> bool:
    """A Gateway this job deploys: class `istio-waypoint`."""
    return gateway is not None and (gateway.get("spec") or {}).get("gatewayClassName") == WAYPOINT_CLASS


def pod_selector(name: str) -> str:
    """The label selector of the pods (and Service) made for Gateway `name`."""
    return f"{GATEWAY_NAME_LABEL}={name},{MANAGED_LABEL}={MANAGED_VALUE}"


# --- validation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Whether the Gateway can be deployed, and the parameters read from it."""

    accepted: bool
    reason: str = "Accepted"
    message: str = "Resource accepted"
    replicas: int = 1
    service_account: str = DEFAULT_SERVICE_ACCOUNT


def validate(gateway: Json) -> Verdict:
    """Check what the schema cannot: the HBONE listener (Istio's `mesh` listener) and the
    annotations this implementation reads."""
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    if not any(li.get("protocol") == "HBONE" and li.get("port") == HBONE_PORT for li in listeners):
        return Verdict(
            False,
            "ListenersNotValid",
            f"a waypoint needs a listener with protocol HBONE on port {HBONE_PORT} "
            "(Istio's: {name: mesh, port: 15008, protocol: HBONE}); add it, or let "
            "`meshctl waypoint apply` write the Gateway",
        )
    annotations = _meta(gateway).get("annotations") or {}
    raw = annotations.get(REPLICAS_ANNOTATION, "1")
    if not raw.isdigit() or int(raw) > MAX_REPLICAS:
        return Verdict(
            False,
            "InvalidParameters",
            f"annotation {REPLICAS_ANNOTATION} must be a whole number from 0 to {MAX_REPLICAS} (got {raw!r})",
        )
    account = annotations.get(SERVICE_ACCOUNT_ANNOTATION, DEFAULT_SERVICE_ACCOUNT)
    if not _DNS_LABEL.match(account):
        return Verdict(
            False,
            "InvalidParameters",
            f"annotation {SERVICE_ACCOUNT_ANNOTATION} must be a service account name "
            f"(a DNS label such as 'waypoint'; got {account!r})",
        )
    return Verdict(True, replicas=int(raw), service_account=account)


# --- desired objects -----------------------------------------------------------------------------


def owner_reference(gateway: Json) -> Json:
    meta = _meta(gateway)
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "Gateway",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_labels(name: str) -> dict[str, str]:
    return {GATEWAY_NAME_LABEL: name, MANAGED_LABEL: MANAGED_VALUE}


def desired_service(gateway: Json) -> Json:
    meta = _meta(gateway)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": owned_labels(meta["name"]),
            "ownerReferences": [owner_reference(gateway)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {GATEWAY_NAME_LABEL: meta["name"]},
            "ports": [
                # As Istio's waypoint Service: appProtocol `all` on the HBONE port.
                {"name": "mesh", "port": HBONE_PORT, "protocol": "TCP", "appProtocol": "all"},
                {"name": "status-port", "port": STATUS_PORT, "protocol": "TCP", "appProtocol": "tcp"},
            ],
        },
    }


def pod_names(name: str, replicas: int) -> list[str]:
    return [f"{name}-{i}" for i in range(replicas)]


def desired_pod(gateway: Json, pod_name: str, service_account: str, node: str | None) -> Json:
    meta = _meta(gateway)
    name, namespace = meta["name"], meta["namespace"]
    spec: Json = {
        "serviceAccountName": service_account,
        "containers": [
            {
                "name": CONTAINER_NAME,
                "command": ["waypoint", "--gateway", f"{namespace}/{name}"],
                "ports": [
                    {"name": "hbone", "containerPort": HBONE_PORT, "protocol": "TCP"},
                    {"name": "status-port", "containerPort": STATUS_PORT, "protocol": "TCP"},
                ],
                "readinessProbe": {
                    "httpGet": {"path": "/healthz/ready", "port": STATUS_PORT},
                    "periodSeconds": 2,
                },
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
            # ztunnel never captures a waypoint: it speaks HBONE itself.
            "labels": {**owned_labels(name), DATAPLANE_MODE_LABEL: "none"},
            "ownerReferences": [owner_reference(gateway)],
        },
        "spec": spec,
    }


# --- ownership -----------------------------------------------------------------------------------


def owned_by_name(obj: Json, name: str) -> bool:
    """Made by this job for a Gateway called `name` (this one or an earlier one of that name)."""
    labels = _labels(obj)
    if labels.get(GATEWAY_NAME_LABEL) != name or labels.get(MANAGED_LABEL) != MANAGED_VALUE:
        return False
    return any(
        ref.get("kind") == "Gateway" and ref.get("name") == name for ref in _meta(obj).get("ownerReferences") or []
    )


def owner_uid(obj: Json) -> str | None:
    for ref in _meta(obj).get("ownerReferences") or []:
        if ref.get("kind") == "Gateway":
            return ref.get("uid")
    return None


# --- placement -----------------------------------------------------------------------------------


def _ready(node: Json) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def schedulable_nodes(nodes: list[Json]) -> list[str]:
    """Nodes a waypoint may go to: Ready and not cordoned."""
    return sorted(_meta(n)["name"] for n in nodes if not (n.get("spec") or {}).get("unschedulable") and _ready(n))


def place(new_pods: list[str], gateway_name: str, nodes: list[str], waypoint_pods: list[Json]) -> dict[str, str | None]:
    """A node for each new pod: the one with the fewest replicas of this Gateway, then the fewest
    waypoint pods, ties by name. None when no node is schedulable: the pod is created unbound and
    istiod's scheduler binds it once it can (docs/istiod.md, Scheduling)."""
    if not nodes:
        return {pod: None for pod in new_pods}
    mine = dict.fromkeys(nodes, 0)
    total = dict.fromkeys(nodes, 0)
    for pod in waypoint_pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node in total:
            total[node] += 1
            if _labels(pod).get(GATEWAY_NAME_LABEL) == gateway_name:
                mine[node] += 1
    out: dict[str, str | None] = {}
    for pod in new_pods:
        node = min(nodes, key=lambda n: (mine[n], total[n], n))
        out[pod] = node
        mine[node] += 1
        total[node] += 1
    return out


# --- the plan ------------------------------------------------------------------------------------


@dataclass
class Plan:
    """The writes that bring the cluster to the desired state, in the order they are made."""

    delete_pods: list[str] = field(default_factory=list)
    delete_service: bool = False
    create_service: Json | None = None
    patch_service: Json | None = None  # a merge patch carrying the resourceVersion it was made from
    create_pods: list[Json] = field(default_factory=list)
    patch_pod_labels: dict[str, Json] = field(default_factory=dict)
    bind_pods: dict[str, Json] = field(default_factory=dict)  # unbound pods given a node (a merge patch)
    service_conflict: str = ""  # why the Service could not be made (someone else's Service of that name)

    @property
    def empty(self) -> bool:
        return not (
            self.delete_pods
            or self.delete_service
            or self.create_service
            or self.patch_service
            or self.create_pods
            or self.patch_pod_labels
            or self.bind_pods
        )


def plan_cleanup(name: str, pods: list[Json], service: Json | None) -> Plan:
    """Everything made for a Gateway that is gone or no longer a waypoint."""
    return Plan(
        delete_pods=sorted(_meta(p)["name"] for p in pods if owned_by_name(p, name)),
        delete_service=service is not None and owned_by_name(service, name),
    )


def _service_patch(current: Json, wanted: Json) -> Json | None:
    cur_spec = current.get("spec") or {}
    want_spec = wanted["spec"]

    def ports(spec: Json) -> list[tuple]:
        return [(p.get("name"), p.get("port"), p.get("protocol", "TCP"), p.get("appProtocol")) for p in spec["ports"]]

    same = (
        cur_spec.get("selector") == want_spec["selector"]
        and ports({"ports": cur_spec.get("ports") or []}) == ports(want_spec)
        and all(_labels(current).get(k) == v for k, v in _labels(wanted).items())
        and owner_uid(current) == owner_uid(wanted)
    )
    if same:
        return None
    return {
        "metadata": {
            "resourceVersion": _meta(current)["resourceVersion"],
            "labels": _labels(wanted),
            "ownerReferences": _meta(wanted)["ownerReferences"],
        },
        "spec": {"selector": want_spec["selector"], "ports": want_spec["ports"]},
    }


def _pod_matches(current: Json, wanted: Json, node_names: set[str]) -> bool:
    """Whether an existing pod can stay. Pod specs are immutable, so any difference means a new pod."""
    spec, want = current.get("spec") or {}, wanted["spec"]
    node = spec.get("nodeName")
    return (
        owner_uid(current) == owner_uid(wanted)
        and spec.get("serviceAccountName") == want["serviceAccountName"]
        and [c.get("command") for c in spec.get("containers") or []] == [c["command"] for c in want["containers"]]
        and (current.get("status") or {}).get("phase") != "Failed"
        and (node is None or node in node_names)  # a pod bound to a Node that is gone is replaced
    )


def plan_waypoint(
    gateway: Json,
    verdict: Verdict,
    pods: list[Json],
    service: Json | None,
    nodes: list[Json],
    waypoint_pods: list[Json],
) -> Plan:
    """The writes for an accepted waypoint Gateway (`pods`: those with its labels in its namespace;
    `waypoint_pods`: every waypoint pod, for spreading)."""
    name = _meta(gateway)["name"]
    plan = Plan()
    wanted_service = desired_service(gateway)
    if service is None:
        plan.create_service = wanted_service
    elif not owned_by_name(service, name):
        plan.service_conflict = (
            f"Service {_meta(gateway)['namespace']}/{name} exists and was not made for this waypoint; "
            "delete or rename it so that the waypoint's Service can be created"
        )
        return plan
    else:
        plan.patch_service = _service_patch(service, wanted_service)

    node_names = {_meta(n)["name"] for n in nodes}
    wanted_names = pod_names(name, verdict.replicas)
    by_name = {_meta(p)["name"]: p for p in pods if owned_by_name(p, name)}
    keep: dict[str, Json] = {}
    for pod_name, pod in sorted(by_name.items()):
        template = desired_pod(gateway, pod_name, verdict.service_account, None)
        if pod_name in wanted_names and _pod_matches(pod, template, node_names):
            keep[pod_name] = pod
            if any(_labels(pod).get(k) != v for k, v in _labels(template).items()):
                plan.patch_pod_labels[pod_name] = {
                    "metadata": {"resourceVersion": _meta(pod)["resourceVersion"], "labels": _labels(template)}
                }
        else:
            plan.delete_pods.append(pod_name)
    missing = [p for p in wanted_names if p not in keep]
    # A pod created while no Node was schedulable is bound as soon as one is (binding sets
    # spec.nodeName once, the only spec change a pod allows).
    unbound = [p for p, pod in keep.items() if not (pod.get("spec") or {}).get("nodeName")]
    others = [p for p in waypoint_pods if (_meta(p).get("namespace"), _meta(p)["name"]) not in _gone(gateway, plan)]
    placement = place(unbound + missing, name, schedulable_nodes(nodes), others)
    for pod_name in unbound:
        if placement[pod_name]:
            rv = _meta(keep[pod_name])["resourceVersion"]
            plan.bind_pods[pod_name] = {"metadata": {"resourceVersion": rv}, "spec": {"nodeName": placement[pod_name]}}
    plan.create_pods = [desired_pod(gateway, p, verdict.service_account, placement[p]) for p in missing]
    return plan


def _gone(gateway: Json, plan: Plan) -> set[tuple[str, str]]:
    namespace = _meta(gateway)["namespace"]
    return {(namespace, p) for p in plan.delete_pods}


# --- status --------------------------------------------------------------------------------------


def _pod_ready(pod: Json) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return not ready or ready[0].get("status") == "True"


def _pod_problem(pod: Json, nodes: list[str]) -> str:
    name = _meta(pod)["name"]
    node = (pod.get("spec") or {}).get("nodeName")
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    if not node:
        where = "no schedulable Ready Node" if not nodes else "waiting for istiod's scheduler"
        return f"{name} is not bound to a node ({where})"
    if phase == "Running":
        return f"{name} on {node} is Running but not Ready"
    return f"{name} on {node} is {phase}"


def programmed(gateway: Json, verdict: Verdict, pods: list[Json], nodes: list[Json], conflict: str = "") -> Json:
    """The Programmed condition: True once a waypoint pod is Running (and Ready when it reports readiness)."""
    meta = _meta(gateway)
    if conflict:
        return {"type": "Programmed", "status": "False", "reason": "AddressNotAssigned", "message": conflict}
    owned = sorted((p for p in pods if owned_by_name(p, meta["name"])), key=lambda p: _meta(p)["name"])
    ready = [p for p in owned if _pod_ready(p)]
    if ready:
        host = f"{meta['name']}.{meta['namespace']}.svc.cluster.local:{HBONE_PORT}"
        return {
            "type": "Programmed",
            "status": "True",
            "reason": "Programmed",
            "message": f"Resource programmed, assigned to service(s) {host}",
        }
    if verdict.replicas == 0:
        message = f"annotation {REPLICAS_ANNOTATION} is 0: no waypoint pod runs"
    elif not owned:
        message = "the waypoint pods are not created yet"
    else:
        schedulable = schedulable_nodes(nodes)
        details = "; ".join(_pod_problem(p, schedulable) for p in owned)
        message = f"0/{len(owned)} waypoint pods ready: {details}"
    return {"type": "Programmed", "status": "False", "reason": "Pending", "message": message}


def desired_status(
    gateway: Json, verdict: Verdict, service: Json | None, pods: list[Json], nodes: list[Json], conflict: str = ""
) -> tuple[list[Json] | None, list[Json]]:
    """(status.addresses, the conditions this job owns) for a waypoint Gateway."""
    if not verdict.accepted:
        accepted = {"type": "Accepted", "status": "False", "reason": verdict.reason, "message": verdict.message}
        not_programmed = {
            "type": "Programmed",
            "status": "False",
            "reason": "Invalid",
            "message": f"the Gateway was not accepted: {verdict.message}",
        }
        return None, [accepted, not_programmed]
    accepted = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Resource accepted"}
    ip = ((service or {}).get("spec") or {}).get("clusterIP") if not conflict else None
    addresses = [{"type": "IPAddress", "value": ip}] if ip and ip != "None" else None
    return addresses, [accepted, programmed(gateway, verdict, pods, nodes, conflict)]
