"""The v1 Pod kind: containers run as host commands, so images are optional and never pulled.

Volumes, security contexts and affinity are accepted as free-form maps: nothing here interprets
them, and ordinary manifests must still apply.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..base import (
    Cause,
    DNSLabel,
    IntOrString,
    IPAddress,
    Model,
    Port,
    dns1035_label_error,
    dns1123_subdomain_error,
    duplicate,
    invalid,
)
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import KubeObject

Json = dict[str, Any]


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
