"""The v1 Service kind: ports, selector and the checks of the apiserver's Service validation.

Cluster IPs and node ports are allocated by istiod's admission, not here.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field

from ..base import (
    Cause,
    IntOrString,
    IPAddress,
    Model,
    Port,
    dns1035_label_error,
    dns1123_label_error,
    duplicate,
    forbidden,
    invalid,
    label_value_error,
    qualified_name_error,
    required,
)
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import KubeObject

Json = dict[str, Any]


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
