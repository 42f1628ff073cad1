"""Workload resources: Pods, WorkloadEntries and the inline endpoints of ServiceEntries.

Follows istio/istio: pilot/pkg/serviceregistry/ambient/workloads.go (podWorkloadBuilder,
workloadEntryWorkloadBuilder, serviceEntryWorkloadBuilder, constructServices). What a workload
lists in `services` and `authorization_policies` depends on other objects (the Services selecting
it, the policies selecting it); the dependency rules in dependencies.py mirror those reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import wrappers_pb2

from mesh.proto_gen.istio.workload import workload_pb2 as wl
from services.xds.model import NODES, ROOT_NAMESPACE, SERVICE_ENTRIES, SERVICES, WORKLOAD_ENTRIES

from . import authorization, peer_authentication
from .resources import CLUSTER_ID, ip_bytes, pod_uid, service_entry_uid, service_hostname, workload_entry_uid
from .services import ServiceResult, service_entry_ports, service_entry_services
from .view import ConfigView, labels_of, meta, selector_of, workload_labels
from .waypoints import NOT_REQUESTED, WaypointBinding, workload_waypoint

Json = dict[str, Any]
# (kind of the selecting object, its port as stored) -> the target port for one workload, or None
# to leave the port out of that workload's PortList.
PortResolver = Callable[[str, Json], int | None]

REDIRECTION = "ambient.istio.io/redirection"  # set by the node agent once the pod's traffic is captured
_CANONICAL_NAME = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
_CANONICAL_REVISION = ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")
_REGION, _ZONE, _SUBZONE = "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"


@dataclass(frozen=True)
class WorkloadResult:
    """A translated workload and how its waypoint binding went."""

    workload: wl.Workload
    binding: WaypointBinding = NOT_REQUESTED


def canonical(labels: dict[str, str], workload_name: str) -> tuple[str, str]:
    """(canonical service, canonical revision) from the labels Istio reads, in its order of
    preference (kubelabels.CanonicalService): the name falls back to the workload name, the
    revision to "latest"."""
    name = next((labels[k] for k in _CANONICAL_NAME if labels.get(k)), workload_name)
    revision = next((labels[k] for k in _CANONICAL_REVISION if labels.get(k)), "latest")
    return name, revision


def _workload_name(pod: Json) -> str:
    """The owning workload's name: a Deployment's for a ReplicaSet pod (its name less the
    pod-template-hash), else the controller's, else the pod's own (GetDeployMetaFromPod)."""
    owners = [o for o in meta(pod).get("ownerReferences") or [] if o.get("controller")]
    if not owners:
        return meta(pod)["name"]
    owner = owners[0]
    template_hash = labels_of(pod).get("pod-template-hash")
    if owner.get("kind") == "ReplicaSet" and template_hash:
        return owner["name"].removesuffix(f"-{template_hash}")
    return owner["name"]


def _pod_ready(pod: Json) -> bool:
    """Running, not being deleted, and Ready when a Ready condition is reported."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or meta(pod).get("deletionTimestamp"):
        return False
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return all(c.get("status") == "True" for c in ready)


def _pod_ips(pod: Json) -> list[bytes] | None:
    """The raw addresses of `status.podIPs` (else `status.podIP`); None without any, or with one
    that is not an IP (Istio then builds no workload)."""
    status = pod.get("status") or {}
    ips = [p.get("ip", "") for p in status.get("podIPs") or []] or ([status["podIP"]] if status.get("podIP") else [])
    raw = [b for ip in ips if (b := ip_bytes(ip)) is not None]
    return raw if raw and len(raw) == len(ips) else None


def _node_locality(view: ConfigView, node_name: str) -> wl.Locality | None:
    node = view.get(NODES, "", node_name) if node_name else None
    labels = labels_of(node) if node else {}
    if not any(labels.get(k) for k in (_REGION, _ZONE, _SUBZONE)):
        return None
    return wl.Locality(region=labels.get(_REGION, ""), zone=labels.get(_ZONE, ""), subzone=labels.get(_SUBZONE, ""))


def _container_port(pod: Json, name: str) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return port.get("containerPort")
    return None


def _service_port_lists(
    view: ConfigView, namespace: str, labels: dict[str, str], resolve: PortResolver
) -> dict[str, wl.PortList]:
    """`ns/hostname` → PortList for every Service and ServiceEntry host of `namespace` selecting
    `labels`, with target ports as `resolve` gives them for this workload."""
    out: dict[str, wl.PortList] = {}
    for svc in view.selecting(SERVICES, namespace, labels):
        ports = [
            wl.Port(service_port=p["port"], target_port=target)
            for p in (svc.get("spec") or {}).get("ports") or []
            if (target := resolve(SERVICES, p)) is not None
        ]
        out[f"{namespace}/{service_hostname(meta(svc)['name'], namespace)}"] = wl.PortList(ports=ports)
    for se in view.selecting(SERVICE_ENTRIES, namespace, labels):
        out.update(_service_entry_port_lists(se, resolve))
    return out


def _service_entry_port_lists(se: Json, resolve: PortResolver) -> dict[str, wl.PortList]:
    spec, namespace = se.get("spec") or {}, meta(se).get("namespace", "")
    ports = []
    for p, port in zip(spec.get("ports") or [], service_entry_ports(spec), strict=True):
        target = resolve(SERVICE_ENTRIES, p)
        ports.append(wl.Port(service_port=port.service_port, target_port=target or port.target_port))
    return {f"{namespace}/{host}": wl.PortList(ports=ports) for host in spec.get("hosts") or []}


def _pod_port_resolver(pod: Json) -> PortResolver:
    """Service ports of a pod: a named targetPort is looked up among the pod's container ports, and
    the port is left out when the pod has none by that name (constructServices)."""

    def resolve(kind: str, port: Json) -> int | None:
        """The pod's port for one Service or ServiceEntry port."""
        target = port.get("targetPort") if kind == SERVICES else None
        if isinstance(target, str):
            return _container_port(pod, target)
        return target if isinstance(target, int) else 0

    return resolve


def _entry_port_resolver(ports: dict[str, int]) -> PortResolver:
    """Service ports of a WorkloadEntry or inline endpoint (constructServicesFromWorkloadEntry): a
    Service's named targetPort is looked up in the entry's `ports` (absent: the port is left out);
    a ServiceEntry port is remapped when the entry names a port like it."""

    def resolve(kind: str, port: Json) -> int | None:
        """The entry's port for one Service or ServiceEntry port."""
        if kind == SERVICE_ENTRIES:
            return ports.get(port.get("name", ""))
        target = port.get("targetPort")
        if isinstance(target, str):
            return ports.get(target)
        return target if isinstance(target, int) else 0

    return resolve


def _policies(view: ConfigView, namespace: str, labels: dict[str, str]) -> list[str]:
    """Selector AuthorizationPolicies, then PeerAuthentication-derived ones (buildWorkloadPolicies)."""
    return authorization.selected_policy_names(view, namespace, labels, ROOT_NAMESPACE) + (
        peer_authentication.effective_policy_names(view, namespace, labels, ROOT_NAMESPACE)
    )


def pod_workload(view: ConfigView, pod: Json) -> WorkloadResult | None:
    """The Workload of a pod; None before it has an IP and once it has terminated."""
    status, spec = pod.get("status") or {}, pod.get("spec") or {}
    addresses = _pod_ips(pod)
    if addresses is None or status.get("phase") in ("Succeeded", "Failed"):
        return None
    name, namespace, labels = meta(pod)["name"], meta(pod).get("namespace", ""), labels_of(pod)
    binding = workload_waypoint(view, pod)
    workload_name = _workload_name(pod)
    canonical_name, canonical_revision = canonical(labels, workload_name)
    redirected = (meta(pod).get("annotations") or {}).get(REDIRECTION) == "enabled"
    workload = wl.Workload(
        uid=pod_uid(namespace, name),
        name=name,
        namespace=namespace,
        addresses=addresses,
        cluster_id=CLUSTER_ID,
        node=spec.get("nodeName", ""),
        # Istio copies spec.serviceAccountName as is ("default" included); "" would mean default too.
        service_account=spec.get("serviceAccountName") or spec.get("serviceAccount") or "default",
        tunnel_protocol=wl.HBONE if redirected else wl.NONE,
        waypoint=binding.address,
        canonical_name=canonical_name,
        canonical_revision=canonical_revision,
        workload_type=wl.POD,
        workload_name=workload_name,
        services=_service_port_lists(view, namespace, labels, _pod_port_resolver(pod)),
        authorization_policies=_policies(view, namespace, labels),
        status=wl.HEALTHY if _pod_ready(pod) else wl.UNHEALTHY,
        locality=_node_locality(view, spec.get("nodeName", "")),
        network_mode=wl.HOST_NETWORK if spec.get("hostNetwork") else wl.STANDARD,
    )
    return WorkloadResult(workload, binding)


def _entry_workload(view: ConfigView, entry: Json, namespace: str, labels: dict[str, str]) -> wl.Workload | None:
    """The fields a WorkloadEntry and an inline ServiceEntry endpoint share (both are WorkloadEntry
    specs); None for an address ztunnel cannot reach (a unix socket) or no address at all."""
    address = entry.get("address") or ""
    raw = ip_bytes(address)
    if address.startswith("unix://") or (not address and not entry.get("network")):
        return None
    locality = (entry.get("locality") or "").split("/")
    workload = wl.Workload(
        addresses=[raw] if raw else [],
        hostname="" if raw else address,  # a DNS name is resolved by ztunnel
        network=entry.get("network") or "",
        cluster_id=CLUSTER_ID,
        service_account=entry.get("serviceAccount") or "",
        tunnel_protocol=wl.NONE,
        workload_type=wl.POD,
        authorization_policies=_policies(view, namespace, labels),
        status=wl.HEALTHY,
        locality=wl.Locality(**dict(zip(("region", "zone", "subzone"), locality, strict=False)))
        if any(locality)
        else None,
        capacity=wrappers_pb2.UInt32Value(value=entry["weight"]) if entry.get("weight") else None,
    )
    return workload


def workload_entry_workload(view: ConfigView, we: Json) -> WorkloadResult | None:
    """The Workload of a WorkloadEntry (uid `Kubernetes/networking.istio.io/WorkloadEntry/{ns}/{name}`)."""
    spec, name, namespace = we.get("spec") or {}, meta(we)["name"], meta(we).get("namespace", "")
    labels = workload_labels(WORKLOAD_ENTRIES, we)
    workload = _entry_workload(view, spec, namespace, labels)
    if workload is None:
        return None
    binding = workload_waypoint(view, we)
    workload.uid, workload.name, workload.namespace = workload_entry_uid(namespace, name), name, namespace
    workload.workload_name = name
    workload.canonical_name, workload.canonical_revision = canonical(labels, name)
    if binding.address is not None:
        workload.waypoint.CopyFrom(binding.address)
    resolver = _entry_port_resolver(spec.get("ports") or {})
    for key, ports in _service_port_lists(view, namespace, labels, resolver).items():
        workload.services[key].CopyFrom(ports)
    return WorkloadResult(workload, binding)


def service_entry_workloads(view: ConfigView, se: Json) -> list[WorkloadResult]:
    """The Workloads of a ServiceEntry's inline endpoints, one per address (uid
    `Kubernetes/networking.istio.io/ServiceEntry/{ns}/{name}/{address}`). A DNS ServiceEntry without
    endpoints gets one implicit endpoint per host, addressed by the host name. Policies select
    them by the ServiceEntry's labels; the waypoint is read from each endpoint's labels."""
    spec, name, namespace = se.get("spec") or {}, meta(se)["name"], meta(se).get("namespace", "")
    if selector_of(SERVICE_ENTRIES, se):
        return []  # the selected pods and WorkloadEntries are its endpoints
    endpoints = spec.get("endpoints") or []
    if not endpoints and spec.get("resolution") in ("DNS", "DNS_ROUND_ROBIN"):
        endpoints = [{"address": host} for host in spec.get("hosts") or []]
    results: dict[str, WorkloadResult] = {}
    for endpoint in endpoints:
        workload = _entry_workload(view, endpoint, namespace, labels_of(se))
        if workload is None:
            continue
        endpoint_meta = {"metadata": {"namespace": namespace, "labels": endpoint.get("labels") or {}}}
        binding = workload_waypoint(view, endpoint_meta)
        workload.uid = service_entry_uid(namespace, name, endpoint.get("address") or "")
        workload.name, workload.namespace, workload.workload_name = name, namespace, name
        workload.canonical_name, workload.canonical_revision = canonical(endpoint.get("labels") or {}, name)
        if binding.address is not None:
            workload.waypoint.CopyFrom(binding.address)
        for key, ports in _service_entry_port_lists(se, _entry_port_resolver(endpoint.get("ports") or {})).items():
            workload.services[key].CopyFrom(ports)
        results.setdefault(workload.uid, WorkloadResult(workload, binding))
    return list(results.values())


def service_entry_resources(view: ConfigView, se: Json) -> tuple[list[ServiceResult], list[WorkloadResult]]:
    """Everything a ServiceEntry yields: a Service per host and a Workload per inline endpoint."""
    return service_entry_services(view, se), service_entry_workloads(view, se)
