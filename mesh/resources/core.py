"""Core (v1) kinds: Namespace, Node, ServiceAccount, Pod, Service.

Only the parts of the Kubernetes schema that a mesh on Linux hosts can use are typed; parts a
container runtime would interpret but this one does not (volumes, security contexts, affinity)
are accepted as free-form maps so that ordinary manifests apply unchanged.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field

from .base import (
    Cause,
    DNSLabel,
    IntOrString,
    IPAddress,
    Model,
    Port,
    dns1035_label_error,
    dns1123_label_error,
    dns1123_subdomain_error,
    duplicate,
    forbidden,
    invalid,
    label_value_error,
    qualified_name_error,
    required,
)
from .kind import Column, ResourceKind, age, jsonpath
from .meta import KubeObject

Json = dict[str, Any]

# --- Namespace -----------------------------------------------------------------------------------


class NamespaceSpec(Model):
    finalizers: list[str] | None = None


class NamespaceStatus(Model):
    phase: Literal["Active", "Terminating"] | None = None
    conditions: list[Json] | None = None


class Namespace(KubeObject):
    spec: NamespaceSpec | None = None
    status: NamespaceStatus | None = None


def _namespace_defaults(obj: Json) -> None:
    # What the apiserver adds: the immutable name label, the finalizer and the phase. kubectl
    # apply still reports "unchanged" because none of these fields are in users' manifests.
    meta = obj["metadata"]
    meta.setdefault("labels", {})
    if meta["labels"] is None:
        meta["labels"] = {}
    meta["labels"]["kubernetes.io/metadata.name"] = meta["name"]
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    status = obj.get("status") or {}
    status.setdefault("phase", "Active")
    obj["status"] = status


NAMESPACE = ResourceKind(
    group="",
    version="v1",
    kind="Namespace",
    plural="namespaces",
    namespaced=False,
    model=Namespace,
    short_names=("ns",),
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Status", jsonpath(".status.phase")),
        age(),
    ),
    name_error=dns1123_label_error,
    defaults=_namespace_defaults,
    strategic_merge=True,
    field_selectors=("status.phase",),
)

# --- Node ----------------------------------------------------------------------------------------


class Taint(Model):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    time_added: str | None = None


class NodeSpec(Model):
    pod_cidr: str | None = Field(default=None, alias="podCIDR")
    pod_cidrs: list[str] | None = Field(default=None, alias="podCIDRs")
    provider_id: str | None = Field(default=None, alias="providerID")
    unschedulable: bool | None = None
    taints: list[Taint] | None = None


class NodeAddress(Model):
    type: Literal["Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS"]
    address: str


class NodeStatus(Model):
    addresses: list[NodeAddress] | None = None
    conditions: list[Json] | None = None
    node_info: Json | None = None
    capacity: dict[str, Any] | None = None
    allocatable: dict[str, Any] | None = None
    daemon_endpoints: Json | None = None
    phase: str | None = None


class Node(KubeObject):
    spec: NodeSpec | None = None
    status: NodeStatus | None = None


def _node_check(obj: Json, model: Node) -> list[Cause]:
    causes = []
    spec = model.spec
    for i, cidr in enumerate((spec.pod_cidrs if spec else None) or []):
        try:
            ipaddress.ip_network(cidr)
        except ValueError:
            causes.append(invalid(f"spec.podCIDRs[{i}]", cidr, "must be a valid CIDR (e.g. 198.18.16.0/24)"))
    if spec and spec.pod_cidr:
        try:
            ipaddress.ip_network(spec.pod_cidr)
        except ValueError:
            causes.append(invalid("spec.podCIDR", spec.pod_cidr, "must be a valid CIDR (e.g. 198.18.16.0/24)"))
    return causes


def _node_ready(obj: Json) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            state = "Ready" if cond.get("status") == "True" else "NotReady"
            break
    else:
        state = "Unknown"
    if (obj.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    return state


def _node_internal_ip(obj: Json) -> str:
    for addr in (obj.get("status") or {}).get("addresses") or []:
        if addr.get("type") == "InternalIP":
            return addr.get("address", "")
    return "<none>"


NODE = ResourceKind(
    group="",
    version="v1",
    kind="Node",
    plural="nodes",
    namespaced=False,
    model=Node,
    short_names=("no",),
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Status", _node_ready),
        Column("Roles", lambda o: "<none>"),
        age(),
        Column("Version", lambda o: ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")),
        Column("Internal-IP", _node_internal_ip, priority=1),
    ),
    check=_node_check,
    strategic_merge=True,
)

# --- ServiceAccount ------------------------------------------------------------------------------


class ServiceAccount(KubeObject):
    secrets: list[Json] | None = None
    image_pull_secrets: list[Json] | None = None
    automount_service_account_token: bool | None = None


SERVICE_ACCOUNT = ResourceKind(
    group="",
    version="v1",
    kind="ServiceAccount",
    plural="serviceaccounts",
    namespaced=True,
    model=ServiceAccount,
    short_names=("sa",),
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Secrets", lambda o: len(o.get("secrets") or []), type="integer"),
        age(),
    ),
    strategic_merge=True,
    spec_fields=("secrets", "imagePullSecrets", "automountServiceAccountToken"),
)

# --- Pod -----------------------------------------------------------------------------------------


class EnvVar(Model):
    name: str = Field(min_length=1)
    value: str | None = None
    value_from: Json | None = None


class ContainerPort(Model):
    container_port: Port
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None
    host_port: int | None = None
    host_ip: str | None = Field(default=None, alias="hostIP")


class HTTPHeader(Model):
    name: str
    value: str


class HTTPGetAction(Model):
    path: str | None = None
    port: IntOrString
    host: str | None = None
    scheme: Literal["HTTP", "HTTPS"] | None = None
    http_headers: list[HTTPHeader] | None = None


class TCPSocketAction(Model):
    port: IntOrString
    host: str | None = None


class ExecAction(Model):
    command: list[str] | None = None


class GRPCAction(Model):
    port: int
    service: str | None = None


class Probe(Model):
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    exec: ExecAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: int | None = Field(default=None, ge=0)
    period_seconds: int | None = Field(default=None, ge=1)
    timeout_seconds: int | None = Field(default=None, ge=1)
    success_threshold: int | None = Field(default=None, ge=1)
    failure_threshold: int | None = Field(default=None, ge=1)
    termination_grace_period_seconds: int | None = None


class Container(Model):
    name: DNSLabel
    image: str | None = None  # recorded, never pulled: pods here run host commands
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    env: list[EnvVar] | None = None
    env_from: list[Json] | None = None
    ports: list[ContainerPort] | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    resources: Json | None = None
    volume_mounts: list[Json] | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    startup_probe: Probe | None = None
    lifecycle: Json | None = None
    security_context: Json | None = None
    termination_message_path: str | None = None
    termination_message_policy: Literal["File", "FallbackToLogsOnError"] | None = None
    stdin: bool | None = None
    tty: bool | None = None
    restart_policy: Literal["Always"] | None = None  # sidecar-style init containers


class PodSpec(Model):
    containers: list[Container] = Field(min_length=1)
    init_containers: list[Container] | None = None
    node_name: str | None = None
    node_selector: dict[str, str] | None = None
    service_account_name: str | None = None
    service_account: str | None = None  # deprecated alias of serviceAccountName
    automount_service_account_token: bool | None = None
    restart_policy: Literal["Always", "OnFailure", "Never"] | None = None
    termination_grace_period_seconds: int | None = Field(default=None, ge=0)
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    hostname: str | None = None
    subdomain: str | None = None
    host_network: bool | None = None
    dns_policy: Literal["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"] | None = None
    volumes: list[Json] | None = None
    security_context: Json | None = None
    image_pull_secrets: list[Json] | None = None
    tolerations: list[Json] | None = None
    affinity: Json | None = None
    scheduler_name: str | None = None
    priority_class_name: str | None = None
    priority: int | None = None
    enable_service_links: bool | None = None
    readiness_gates: list[Json] | None = None
    topology_spread_constraints: list[Json] | None = None


class PodCondition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    last_probe_time: str | None = None
    last_transition_time: str | None = None
    reason: str | None = None
    message: str | None = None


class PodIP(Model):
    ip: IPAddress


class PodStatus(Model):
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"] | None = None
    pod_ip: IPAddress | None = Field(default=None, alias="podIP")
    pod_ips: list[PodIP] | None = Field(default=None, alias="podIPs")
    host_ip: IPAddress | None = Field(default=None, alias="hostIP")
    host_ips: list[PodIP] | None = Field(default=None, alias="hostIPs")
    conditions: list[PodCondition] | None = None
    container_statuses: list[Json] | None = None
    init_container_statuses: list[Json] | None = None
    start_time: str | None = None
    reason: str | None = None
    message: str | None = None
    qos_class: str | None = None
    nominated_node_name: str | None = None


class Pod(KubeObject):
    spec: PodSpec
    status: PodStatus | None = None


def _pod_check(obj: Json, model: Pod) -> list[Cause]:
    causes: list[Cause] = []
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(
            getattr(model.spec, "init_containers" if group == "initContainers" else "containers") or []
        ):
            if c.name in names:
                causes.append(duplicate(f"spec.{group}[{i}].name", c.name))
            names.add(c.name)
            for j, port in enumerate(c.ports or []):
                if port.name and (len(port.name) > 15 or dns1035_label_error(port.name)):
                    causes.append(
                        invalid(f"spec.{group}[{i}].ports[{j}].name", port.name, "must be an IANA service name")
                    )
            for j, env in enumerate(c.env or []):
                if env.value is not None and env.value_from is not None:
                    causes.append(
                        invalid(
                            f"spec.{group}[{i}].env[{j}].valueFrom",
                            "",
                            "may not be specified when `value` is not empty",
                        )
                    )
    sa = model.spec.service_account_name
    if sa:
        problem = dns1123_subdomain_error(sa)
        if problem:
            causes.append(invalid("spec.serviceAccountName", sa, problem))
    return causes


def _pod_defaults(obj: Json) -> None:
    spec = obj["spec"]
    # The deprecated `serviceAccount` field and `serviceAccountName` mirror each other.
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = sa
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    status = obj.get("status") or {}
    status.setdefault("phase", "Pending")
    obj["status"] = status


def _pod_ready(obj: Json) -> str:
    spec = obj.get("spec") or {}
    total = len(spec.get("containers") or [])
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    return f"{ready}/{total}"


def _pod_status(obj: Json) -> str:
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status") or {}
    return status.get("reason") or status.get("phase") or "Pending"


def _pod_restarts(obj: Json) -> int:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses)


POD = ResourceKind(
    group="",
    version="v1",
    kind="Pod",
    plural="pods",
    namespaced=True,
    model=Pod,
    short_names=("po",),
    categories=("all",),
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Ready", _pod_ready),
        Column("Status", _pod_status),
        Column("Restarts", _pod_restarts, type="integer"),
        age(),
        Column("IP", lambda o: (o.get("status") or {}).get("podIP") or "<none>", priority=1),
        Column("Node", lambda o: (o.get("spec") or {}).get("nodeName") or "<none>", priority=1),
    ),
    check=_pod_check,
    defaults=_pod_defaults,
    strategic_merge=True,
    field_selectors=("spec.nodeName", "status.phase", "spec.serviceAccountName", "status.podIP"),
)

# --- Service -------------------------------------------------------------------------------------


class ServicePort(Model):
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None
    app_protocol: str | None = None
    port: Port
    target_port: IntOrString | None = None
    node_port: int | None = Field(default=None, ge=1, le=65535)


class ServiceSpec(Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] | None = None
    ports: list[ServicePort] | None = None
    selector: dict[str, str] | None = None
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[str] | None = Field(default=None, alias="clusterIPs")
    external_name: str | None = None
    external_ips: list[IPAddress] | None = Field(default=None, alias="externalIPs")
    session_affinity: Literal["ClientIP", "None"] | None = None
    session_affinity_config: Json | None = None
    ip_families: list[Literal["IPv4", "IPv6"]] | None = None
    ip_family_policy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] | None = None
    internal_traffic_policy: Literal["Cluster", "Local"] | None = None
    external_traffic_policy: Literal["Cluster", "Local"] | None = None
    publish_not_ready_addresses: bool | None = None
    load_balancer_ip: str | None = Field(default=None, alias="loadBalancerIP")
    load_balancer_source_ranges: list[str] | None = None
    load_balancer_class: str | None = None
    allocate_load_balancer_node_ports: bool | None = None
    health_check_node_port: int | None = None
    traffic_distribution: str | None = None


class LoadBalancerIngress(Model):
    ip: str | None = None
    hostname: str | None = None
    ip_mode: str | None = None
    ports: list[Json] | None = None


class LoadBalancerStatus(Model):
    ingress: list[LoadBalancerIngress] | None = None


class ServiceStatus(Model):
    load_balancer: LoadBalancerStatus | None = None
    conditions: list[Json] | None = None


class Service(KubeObject):
    spec: ServiceSpec
    status: ServiceStatus | None = None


def _service_check(obj: Json, model: Service) -> list[Cause]:
    spec = model.spec
    causes: list[Cause] = []
    ports = spec.ports or []
    if spec.type == "ExternalName":
        if not spec.external_name:
            causes.append(required("spec.externalName"))
    elif not ports and spec.cluster_ip != "None":
        causes.append(required("spec.ports"))
    names: set[str] = set()
    numbers: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        if len(ports) > 1 and not p.name:
            causes.append(required(f"spec.ports[{i}].name"))
        if p.name:
            problem = dns1123_label_error(p.name)
            if problem:
                causes.append(invalid(f"spec.ports[{i}].name", p.name, problem))
            elif p.name in names:
                causes.append(duplicate(f"spec.ports[{i}].name", p.name))
            names.add(p.name)
        key = (p.port, p.protocol or "TCP")
        if key in numbers:
            causes.append(duplicate(f"spec.ports[{i}]", f"{p.port}/{key[1]}"))
        numbers.add(key)
        if isinstance(p.target_port, int) and not 1 <= p.target_port <= 65535:
            causes.append(
                invalid(f"spec.ports[{i}].targetPort", p.target_port, "must be between 1 and 65535, inclusive")
            )
        if p.node_port and spec.type not in ("NodePort", "LoadBalancer"):
            causes.append(forbidden(f"spec.ports[{i}].nodePort", "may not be used when `type` is 'ClusterIP'"))
    ip = spec.cluster_ip
    if ip not in (None, "", "None"):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            causes.append(invalid("spec.clusterIP", ip, "must be empty, 'None', or a valid IP address"))
    if spec.selector:
        for k, v in spec.selector.items():
            problem = qualified_name_error(k) or label_value_error(v)
            if problem:
                causes.append(invalid("spec.selector", f"{k}={v}", problem))
    return causes


def _service_defaults(obj: Json) -> None:
    spec = obj["spec"]
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def _service_ports(obj: Json) -> str:
    out = []
    for p in (obj.get("spec") or {}).get("ports") or []:
        text = str(p.get("port"))
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        out.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _external_ip(obj: Json) -> str:
    spec = obj.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return spec.get("externalName", "")
    ingress = (((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []
    ips = [i.get("ip") or i.get("hostname") for i in ingress] + list(spec.get("externalIPs") or [])
    if ips:
        return ",".join(x for x in ips if x)
    return "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"


def _selector_text(obj: Json) -> str:
    sel = (obj.get("spec") or {}).get("selector") or {}
    return ",".join(f"{k}={v}" for k, v in sel.items()) or "<none>"


SERVICE = ResourceKind(
    group="",
    version="v1",
    kind="Service",
    plural="services",
    namespaced=True,
    model=Service,
    short_names=("svc",),
    categories=("all",),
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Type", jsonpath(".spec.type")),
        Column("Cluster-IP", lambda o: (o.get("spec") or {}).get("clusterIP") or "<none>"),
        Column("External-IP", _external_ip),
        Column("Port(s)", _service_ports),
        age(),
        Column("Selector", _selector_text, priority=1),
    ),
    name_error=dns1035_label_error,
    check=_service_check,
    defaults=_service_defaults,
    strategic_merge=True,
)

CORE_KINDS: tuple[ResourceKind, ...] = (NAMESPACE, NODE, SERVICE_ACCOUNT, POD, SERVICE)
