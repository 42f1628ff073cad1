"""The Service domain type, converted once from `istio.workload.Service` (reference §2).

A Service is a hostname with VIPs and ports; its endpoints are not in the message but are the
workloads whose `services` map names it (the store indexes them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from mesh.proto_gen.istio.workload import workload_pb2 as wl

from .address import GatewayAddress, NetworkAddress, gateway_from_proto, network_address_from_proto
from .convert import enum_name, port
from .errors import ResourceError


class RoutingScope(StrEnum):
    """A locality attribute load balancing may prefer to match (LoadBalancing.Scope)."""

    REGION = "REGION"
    ZONE = "ZONE"
    SUBZONE = "SUBZONE"
    NODE = "NODE"
    CLUSTER = "CLUSTER"
    NETWORK = "NETWORK"


class LoadBalancingMode(StrEnum):
    """UNSPECIFIED: no locality preference; STRICT: only endpoints matching every scope;
    FAILOVER: the best-matching endpoints; PASSTHROUGH: to the address the client dialled."""

    UNSPECIFIED = "UNSPECIFIED_MODE"
    STRICT = "STRICT"
    FAILOVER = "FAILOVER"
    PASSTHROUGH = "PASSTHROUGH"


class HealthPolicy(StrEnum):
    """ONLY_HEALTHY (the default) or ALLOW_ALL (Kubernetes `publishNotReadyAddresses`)."""

    ONLY_HEALTHY = "ONLY_HEALTHY"
    ALLOW_ALL = "ALLOW_ALL"


@dataclass(frozen=True, slots=True)
class LoadBalancing:
    """How ztunnel picks among a service's endpoints (istio/ztunnel: src/state.rs load_balance)."""

    routing_preference: tuple[RoutingScope, ...] = ()
    mode: LoadBalancingMode = LoadBalancingMode.UNSPECIFIED
    health_policy: HealthPolicy = HealthPolicy.ONLY_HEALTHY


@dataclass(frozen=True, kw_only=True)
class Service:
    """A service as ztunnel knows it. `ports` maps service port -> target port (0: the target port
    is given per endpoint, as for a named Kubernetes targetPort)."""

    name: str
    namespace: str
    hostname: str
    vips: tuple[NetworkAddress, ...] = ()
    ports: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    app_protocols: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    subject_alt_names: tuple[str, ...] = ()
    waypoint: GatewayAddress | None = None
    load_balancing: LoadBalancing | None = None
    ip_families: str = "AUTOMATIC"
    canonical: bool = False
    ingress_use_waypoint: bool = False
    visibility: str = "PUBLIC"

    @property
    def key(self) -> str:
        """`namespace/hostname`: the xDS resource name, and the key workloads list it under."""
        return f"{self.namespace}/{self.hostname}"

    @property
    def allows_unhealthy(self) -> bool:
        return self.load_balancing is not None and self.load_balancing.health_policy is HealthPolicy.ALLOW_ALL

    @classmethod
    def from_proto(cls, message: wl.Service) -> Service:
        """Convert a Service message; ResourceError names the field that cannot be taken."""
        if not message.hostname:
            raise ResourceError("hostname: a service needs a hostname")
        ports, protocols = {}, {}
        for i, p in enumerate(message.ports):
            service_port = port(p.service_port, f"ports[{i}].service_port")
            ports[service_port] = port(p.target_port, f"ports[{i}].target_port")
            protocols[service_port] = enum_name(wl.AppProtocol, p.app_protocol, f"ports[{i}].app_protocol")
        return cls(
            name=message.name,
            namespace=message.namespace,
            hostname=message.hostname,
            vips=tuple(network_address_from_proto(a, f"addresses[{i}]") for i, a in enumerate(message.addresses)),
            ports=MappingProxyType(ports),
            app_protocols=MappingProxyType(protocols),
            subject_alt_names=tuple(message.subject_alt_names),
            waypoint=gateway_from_proto(message.waypoint, "waypoint") if message.HasField("waypoint") else None,
            load_balancing=_load_balancing(message) if message.HasField("load_balancing") else None,
            ip_families=enum_name(wl.IPFamilies, message.ip_families, "ip_families"),
            canonical=message.canonical,
            ingress_use_waypoint=message.ingress_use_waypoint,
            visibility=enum_name(wl.ServiceVisibility, message.visibility, "visibility"),
        )


def _load_balancing(message: wl.Service) -> LoadBalancing:
    lb = message.load_balancing
    scopes = []
    for i, scope in enumerate(lb.routing_preference):
        name = enum_name(wl.LoadBalancing.Scope, scope, f"load_balancing.routing_preference[{i}]")
        if name == "UNSPECIFIED_SCOPE":
            continue  # carries no preference
        scopes.append(RoutingScope(name))
    return LoadBalancing(
        routing_preference=tuple(scopes),
        mode=LoadBalancingMode(enum_name(wl.LoadBalancing.Mode, lb.mode, "load_balancing.mode")),
        health_policy=HealthPolicy(
            enum_name(wl.LoadBalancing.HealthPolicy, lb.health_policy, "load_balancing.health_policy")
        ),
    )
