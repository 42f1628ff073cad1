"""Deploying a Gateway's pods and Service (pure), shared by the waypoint and the ingress jobs.

A `Workload` says what one Gateway should run (its Service, its pod template, how many replicas,
and which controller's label marks the objects); `plan_deployment` compares it with what exists
and returns the writes. Pod specs are immutable, so a pod that differs is replaced; pods are
placed on the Ready, schedulable Node with the fewest replicas of this Gateway, then the fewest
pods of the same controller. Objects are plain JSON dicts, as istiod's API serves them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
MANAGED_LABEL = "gateway.istio.io/managed"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"


def meta_of(obj: Json) -> Json:
    return obj.get("metadata") or {}


def labels_of(obj: Json) -> dict[str, str]:
    return meta_of(obj).get("labels") or {}


def pod_selector(name: str, managed: str) -> str:
    """The label selector of the pods (and Service) a controller made for Gateway `name`."""
    return f"{GATEWAY_NAME_LABEL}={name},{MANAGED_LABEL}={managed}"


def owner_reference(gateway: Json) -> Json:
    meta = meta_of(gateway)
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "Gateway",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_labels(name: str, managed: str) -> dict[str, str]:
    return {GATEWAY_NAME_LABEL: name, MANAGED_LABEL: managed}


def gateway_service(gateway: Json, managed: str, ports: list[Json]) -> Json:
    """The ClusterIP Service the `managed` controller makes for a Gateway: named after it, owned by
    it, selecting its pods, with `ports`."""
    meta = meta_of(gateway)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": owned_labels(meta["name"], managed),
            "ownerReferences": [owner_reference(gateway)],
        },
        "spec": {"type": "ClusterIP", "selector": {GATEWAY_NAME_LABEL: meta["name"]}, "ports": ports},
    }


def owned_by_name(obj: Json, name: str, managed: str) -> bool:
    """Made by the `managed` controller for a Gateway called `name` (this one or an earlier one)."""
    labels = labels_of(obj)
    if labels.get(GATEWAY_NAME_LABEL) != name or labels.get(MANAGED_LABEL) != managed:
        return False
    return any(
        ref.get("kind") == "Gateway" and ref.get("name") == name for ref in meta_of(obj).get("ownerReferences") or []
    )


def owner_uid(obj: Json) -> str | None:
    for ref in meta_of(obj).get("ownerReferences") or []:
        if ref.get("kind") == "Gateway":
            return ref.get("uid")
    return None


def pod_names(name: str, replicas: int) -> list[str]:
    return [f"{name}-{i}" for i in range(replicas)]


@dataclass(frozen=True)
class Workload:
    """What one Gateway should run."""

    managed: str  # the gateway.istio.io/managed value of its objects
    noun: str  # how messages name it: "waypoint", "gateway"
    replicas: int
    service: Json  # the desired Service
    pod: Callable[[str, str | None], Json]  # (pod name, node or None) -> the desired pod


# --- placement -----------------------------------------------------------------------------------


def _ready(node: Json) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def schedulable_nodes(nodes: list[Json]) -> list[str]:
    """Nodes a gateway pod may go to: Ready and not cordoned."""
    return sorted(meta_of(n)["name"] for n in nodes if not (n.get("spec") or {}).get("unschedulable") and _ready(n))


def place(new_pods: list[str], gateway_name: str, nodes: list[str], peer_pods: list[Json]) -> dict[str, str | None]:
    """A node for each new pod: the one with the fewest replicas of this Gateway, then the fewest
    peer pods (same controller), ties by name. None when no node is schedulable: the pod is created
    unbound and istiod's scheduler binds it once it can (docs/istiod.md, Scheduling)."""
    if not nodes:
        return {pod: None for pod in new_pods}
    mine = dict.fromkeys(nodes, 0)
    total = dict.fromkeys(nodes, 0)
    for pod in peer_pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node in total:
            total[node] += 1
            if labels_of(pod).get(GATEWAY_NAME_LABEL) == gateway_name:
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


def plan_cleanup(name: str, pods: list[Json], service: Json | None, managed: str) -> Plan:
    """Everything the `managed` controller made for a Gateway that is gone or no longer its own."""
    return Plan(
        delete_pods=sorted(meta_of(p)["name"] for p in pods if owned_by_name(p, name, managed)),
        delete_service=service is not None and owned_by_name(service, name, managed),
    )


def _port_key(port: Json) -> tuple:
    return (port.get("name"), port.get("port"), port.get("protocol", "TCP"), port.get("appProtocol"))


def service_patch(current: Json, wanted: Json) -> Json | None:
    """A merge patch bringing the Service's selector, ports, labels and owner in line, or None."""
    cur_spec = current.get("spec") or {}
    want_spec = wanted["spec"]
    same = (
        cur_spec.get("selector") == want_spec["selector"]
        and [_port_key(p) for p in cur_spec.get("ports") or []] == [_port_key(p) for p in want_spec["ports"]]
        and all(labels_of(current).get(k) == v for k, v in labels_of(wanted).items())
        and owner_uid(current) == owner_uid(wanted)
    )
    if same:
        return None
    return {
        "metadata": {
            "resourceVersion": meta_of(current)["resourceVersion"],
            "labels": labels_of(wanted),
            "ownerReferences": meta_of(wanted)["ownerReferences"],
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


def plan_deployment(
    gateway: Json, workload: Workload, pods: list[Json], service: Json | None, nodes: list[Json], peer_pods: list[Json]
) -> Plan:
    """The writes for an accepted Gateway (`pods`: those with its labels in its namespace;
    `peer_pods`: every pod of the same controller, for spreading)."""
    meta = meta_of(gateway)
    name = meta["name"]
    plan = Plan()
    if service is None:
        plan.create_service = workload.service
    elif not owned_by_name(service, name, workload.managed):
        plan.service_conflict = (
            f"Service {meta['namespace']}/{name} exists and was not made for this {workload.noun}; "
            f"delete or rename it so that the {workload.noun}'s Service can be created"
        )
        return plan
    else:
        plan.patch_service = service_patch(service, workload.service)

    node_names = {meta_of(n)["name"] for n in nodes}
    wanted_names = pod_names(name, workload.replicas)
    by_name = {meta_of(p)["name"]: p for p in pods if owned_by_name(p, name, workload.managed)}
    keep: dict[str, Json] = {}
    for pod_name, pod in sorted(by_name.items()):
        template = workload.pod(pod_name, None)
        if pod_name in wanted_names and _pod_matches(pod, template, node_names):
            keep[pod_name] = pod
            if any(labels_of(pod).get(k) != v for k, v in labels_of(template).items()):
                plan.patch_pod_labels[pod_name] = {
                    "metadata": {"resourceVersion": meta_of(pod)["resourceVersion"], "labels": labels_of(template)}
                }
        else:
            plan.delete_pods.append(pod_name)
    missing = [p for p in wanted_names if p not in keep]
    # A pod created while no Node was schedulable is bound as soon as one is (binding sets
    # spec.nodeName once, the only spec change a pod allows).
    unbound = [p for p, pod in keep.items() if not (pod.get("spec") or {}).get("nodeName")]
    gone = {(meta["namespace"], p) for p in plan.delete_pods}
    others = [p for p in peer_pods if (meta_of(p).get("namespace"), meta_of(p)["name"]) not in gone]
    placement = place(unbound + missing, name, schedulable_nodes(nodes), others)
    for pod_name in unbound:
        if placement[pod_name]:
            rv = meta_of(keep[pod_name])["resourceVersion"]
            plan.bind_pods[pod_name] = {"metadata": {"resourceVersion": rv}, "spec": {"nodeName": placement[pod_name]}}
    plan.create_pods = [workload.pod(p, placement[p]) for p in missing]
    return plan


# --- readiness -----------------------------------------------------------------------------------


def pod_ready(pod: Json) -> bool:
    """Running, and Ready when the pod reports readiness."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return not ready or ready[0].get("status") == "True"


def pod_problem(pod: Json, nodes: list[str]) -> str:
    """Why a pod is not ready, for a Programmed message (`G-0 on node-1 is Pending`)."""
    name = meta_of(pod)["name"]
    node = (pod.get("spec") or {}).get("nodeName")
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    if not node:
        where = "no schedulable Ready Node" if not nodes else "waiting for istiod's scheduler"
        return f"{name} is not bound to a node ({where})"
    if phase == "Running":
        return f"{name} on {node} is Running but not Ready"
    return f"{name} on {node} is {phase}"


def not_ready_message(owned: list[Json], nodes: list[Json], noun: str) -> str:
    """`0/2 gateway pods ready: G-0 on node-1 is Pending; ...` (or that none exist yet)."""
    if not owned:
        return f"the {noun} pods are not created yet"
    schedulable = schedulable_nodes(nodes)
    details = "; ".join(pod_problem(p, schedulable) for p in owned)
    return f"0/{len(owned)} {noun} pods ready: {details}"
