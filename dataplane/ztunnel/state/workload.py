"""The Workload domain type, converted once from `istio.workload.Workload` (reference §2).

Defaults are applied here, where the message enters, as ztunnel applies them in its conversion
(istio/ztunnel: src/state/workload.rs): an empty trust domain is `cluster.local`, an empty service
account `default`, an unset capacity 1. From then on nothing downstream sees a generated class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from mesh.identity import DEFAULT_TRUST_DOMAIN, Identity, IdentityError
from mesh.proto_gen.istio.workload import workload_pb2 as wl

from .address import GatewayAddress, IpAddress, gateway_from_proto, ip_from_bytes
from .convert import enum_name, port
from .errors import ResourceError

DEFAULT_SERVICE_ACCOUNT = "default"


class TunnelProtocol(StrEnum):
    """How the workload accepts mesh traffic: NONE (plain TCP) or HBONE (it is captured by a ztunnel)."""

    NONE = "NONE"
    HBONE = "HBONE"
    LEGACY_ISTIO_MTLS = "LEGACY_ISTIO_MTLS"


class HealthStatus(StrEnum):
    """Whether the workload may receive service traffic (a pod that is Running and Ready)."""

    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"


@dataclass(frozen=True, slots=True)
class Locality:
    """Where the workload runs; load balancing compares it with the source's (reference §2)."""

    region: str = ""
    zone: str = ""
    subzone: str = ""


@dataclass(frozen=True, slots=True)
class ApplicationTunnel:
    """A tunnel the application itself terminates (`PROXY`: PROXY protocol on `port`)."""

    protocol: str
    port: int


PortMap = Mapping[int, int]  # service port -> target port


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(mapping)


@dataclass(frozen=True, kw_only=True)
class Workload:
    """One workload (a pod, a WorkloadEntry, a ServiceEntry endpoint) as ztunnel knows it.

    `services` maps each service key (`ns/hostname`) to the ports this workload serves for it
    (service port -> target port; 0 means "the service's target port"). `identity` is the SPIFFE
    identity its certificate carries and the one a client expects of it.
    """

    uid: str
    name: str
    namespace: str
    addresses: tuple[IpAddress, ...] = ()
    hostname: str = ""
    network: str = ""
    node: str = ""
    cluster_id: str = ""
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    identity: Identity
    tunnel_protocol: TunnelProtocol = TunnelProtocol.NONE
    waypoint: GatewayAddress | None = None
    network_gateway: GatewayAddress | None = None
    canonical_name: str = ""
    canonical_revision: str = ""
    workload_type: str = "DEPLOYMENT"
    workload_name: str = ""
    native_tunnel: bool = False
    application_tunnel: ApplicationTunnel | None = None
    services: Mapping[str, PortMap] = field(default_factory=lambda: _frozen({}), hash=False)
    authorization_policies: tuple[str, ...] = ()
    status: HealthStatus = HealthStatus.HEALTHY
    locality: Locality = Locality()
    network_mode: str = "STANDARD"
    capacity: int = 1

    @property
    def healthy(self) -> bool:
        return self.status is HealthStatus.HEALTHY

    @classmethod
    def from_proto(cls, message: wl.Workload) -> Workload:
        """Convert a Workload message; ResourceError names the field that cannot be taken."""
        if not message.uid:
            raise ResourceError("uid: a workload needs a uid (its xDS resource name)")
        trust_domain = message.trust_domain or DEFAULT_TRUST_DOMAIN
        service_account = message.service_account or DEFAULT_SERVICE_ACCOUNT
        try:
            identity = Identity(trust_domain, message.namespace, service_account)
        except IdentityError as e:
            raise ResourceError(f"identity: {e}") from None
        return cls(
            uid=message.uid,
            name=message.name,
            namespace=message.namespace,
            addresses=tuple(ip_from_bytes(raw, f"addresses[{i}]") for i, raw in enumerate(message.addresses)),
            hostname=message.hostname,
            network=message.network,
            node=message.node,
            cluster_id=message.cluster_id,
            trust_domain=trust_domain,
            service_account=service_account,
            identity=identity,
            tunnel_protocol=TunnelProtocol(enum_name(wl.TunnelProtocol, message.tunnel_protocol, "tunnel_protocol")),
            waypoint=gateway_from_proto(message.waypoint, "waypoint") if message.HasField("waypoint") else None,
            network_gateway=(
                gateway_from_proto(message.network_gateway, "network_gateway")
                if message.HasField("network_gateway")
                else None
            ),
            canonical_name=message.canonical_name,
            canonical_revision=message.canonical_revision,
            workload_type=enum_name(wl.WorkloadType, message.workload_type, "workload_type"),
            workload_name=message.workload_name,
            native_tunnel=message.native_tunnel,
            application_tunnel=_application_tunnel(message),
            services=_services(message),
            authorization_policies=tuple(message.authorization_policies),
            status=HealthStatus(enum_name(wl.WorkloadStatus, message.status, "status")),
            locality=Locality(message.locality.region, message.locality.zone, message.locality.subzone),
            network_mode=enum_name(wl.NetworkMode, message.network_mode, "network_mode"),
            # ztunnel: an unset capacity is 1; an explicit 0 takes the workload out of rotation.
            capacity=message.capacity.value if message.HasField("capacity") else 1,
        )


def _services(message: wl.Workload) -> Mapping[str, PortMap]:
    out = {}
    for key, port_list in message.services.items():
        if "/" not in key:
            raise ResourceError(f"services[{key!r}]: a service key is namespace/hostname")
        ports = {}
        for i, p in enumerate(port_list.ports):
            where = f"services[{key!r}].ports[{i}]"
            ports[port(p.service_port, f"{where}.service_port")] = port(p.target_port, f"{where}.target_port")
        out[key] = _frozen(ports)
    return _frozen(out)


def _application_tunnel(message: wl.Workload) -> ApplicationTunnel | None:
    if not message.HasField("application_tunnel"):
        return None
    tunnel = message.application_tunnel
    protocol = enum_name(wl.ApplicationTunnel.Protocol, tunnel.protocol, "application_tunnel.protocol")
    return ApplicationTunnel(protocol, port(tunnel.port, "application_tunnel.port"))
