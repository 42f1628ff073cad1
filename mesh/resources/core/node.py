"""The v1 Node kind: a host of the mesh, its pod CIDRs, addresses and readiness columns."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field

from ..base import Cause, Model, invalid
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import KubeObject

Json = dict[str, Any]


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
