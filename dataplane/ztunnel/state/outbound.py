"""Where an outbound connection goes: the pure outbound decision (reference §6).

Follows istio/ztunnel: src/proxy/outbound.rs build_request, in its order:
1. an unknown source is denied, and so is a call to ztunnel's own ports (a loop);
2. a service VIP (an IP no workload holds) whose service has a waypoint → HBONE to the waypoint,
   `:authority` = VIP:port; a PASSTHROUGH service → plain TCP to the address dialled;
3. otherwise the service's endpoint (load balanced), or the workload holding the IP; then
   - the workload has a waypoint, the source is not that waypoint and the connection was not
     addressed to a service → HBONE to the waypoint, `:authority` = podIP:port;
   - the workload speaks HBONE → HBONE to podIP:15008, `:authority` = podIP:targetPort;
   - otherwise plain TCP to podIP:targetPort (also for any address the mesh does not know).
`expected_identities` are the identities the server's certificate may carry (the workload's, and
the service's subject_alt_names): the client checks the peer SAN against them.

Not implemented: double HBONE through an east-west gateway (step 4 of the reference), and DNS
resolution of hostname-only workloads; both are refused with a reason instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mesh.identity import Identity, IdentityError

from .address import HBONE_PORT, GatewayAddress, IpAddress, NamespacedHostname, socket_text
from .load_balancing import Endpoint
from .service import LoadBalancingMode, Service
from .workload import TunnelProtocol, Workload

# ztunnel's own listeners in a pod's netns: reaching them from the pod would loop (illegal_ports).
ZTUNNEL_PORTS = frozenset({15001, 15006, 15008})


class Route(StrEnum):
    DENY = "deny"
    HBONE = "hbone"
    TCP = "tcp"  # passthrough: plain TCP to the destination


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do with one outbound connection.

    `connect_to` is the socket address to open (podIP:15008 for HBONE); `authority` the CONNECT
    target inside the tunnel; `destination_workload` the workload connected to (the waypoint when
    there is one); `destination_service` the service the client addressed, if any.
    """

    route: Route
    reason: str
    source: Workload | None = None
    connect_to: tuple[IpAddress, int] | None = None
    authority: str | None = None
    expected_identities: tuple[Identity, ...] = ()
    destination_workload: Workload | None = None
    destination_service: Service | None = None
    via_waypoint: bool = False

    @property
    def allowed(self) -> bool:
        return self.route is not Route.DENY


class Lookup(Protocol):
    """The reads the decision needs (StateStore provides them)."""

    def workload_by_ip(self, ip: IpAddress, network: str = "") -> Workload | None: ...
    def service(self, key: str) -> Service | None: ...
    def service_by_vip(self, ip: IpAddress, port: int, network: str = "") -> Service | None: ...
    def pick_endpoint(self, service: Service, port: int, source: Workload | None = None) -> Endpoint | None: ...


@dataclass(frozen=True)
class _Waypoint:
    workload: Workload
    ip: IpAddress
    port: int
    identities: tuple[Identity, ...]


def decide(
    state: Lookup, source: Workload | None, dst_ip: IpAddress | str, dst_port: int, *, hbone_port: int = HBONE_PORT
) -> Decision:
    """Decide the route of a connection from `source` to `dst_ip:dst_port` (the original destination)."""
    dst_ip = ipaddress.ip_address(dst_ip)
    if source is None:
        why = f"unknown source workload connecting to {socket_text(dst_ip, dst_port)}"
        return Decision(route=Route.DENY, reason=why)
    if dst_port in ZTUNNEL_PORTS and (dst_ip.is_loopback or dst_ip in source.addresses):
        return Decision(route=Route.DENY, source=source, reason=f"refusing a call to ztunnel's own port {dst_port}")
    # ztunnel's find_address: a workload holding the IP wins over a service VIP.
    workload = state.workload_by_ip(dst_ip, source.network)
    if workload is not None:
        return _to_workload(state, source, Endpoint(workload, dst_port), dst_ip, None, hbone_port)
    service = state.service_by_vip(dst_ip, dst_port, source.network)
    if service is not None:
        return _to_service(state, source, service, dst_ip, dst_port, hbone_port)
    return _passthrough(source, dst_ip, dst_port, "destination is not a known workload or service")


def _to_service(
    state: Lookup, source: Workload, service: Service, vip: IpAddress, port: int, hbone_port: int
) -> Decision:
    authority = socket_text(vip, port)
    if service.waypoint is not None:
        waypoint = _resolve_waypoint(state, service.waypoint, source)
        if waypoint is None:
            return _deny(source, f"waypoint of service {service.key} cannot be resolved")
        return _via_waypoint(source, waypoint, authority, service, f"service {service.key} has a waypoint")
    if service.load_balancing is not None and service.load_balancing.mode is LoadBalancingMode.PASSTHROUGH:
        return _passthrough(source, vip, port, f"service {service.key} is PASSTHROUGH", service)
    endpoint = state.pick_endpoint(service, port, source)
    if endpoint is None:
        return _deny(source, f"no healthy endpoint for {service.key} port {port}", service)
    ip = _address_for(endpoint.workload, vip.version)
    if ip is None:
        return _deny(source, f"endpoint {endpoint.workload.uid} has no IP address (DNS workloads are unsupported)")
    return _to_workload(state, source, endpoint, ip, service, hbone_port)


def _to_workload(
    state: Lookup, source: Workload, endpoint: Endpoint, ip: IpAddress, service: Service | None, hbone_port: int
) -> Decision:
    """Step 3 of build_request once the destination workload is known; `service` is the service
    the client addressed (None when it dialled the workload's own IP)."""
    workload, port = endpoint
    if workload.network != source.network:
        return _deny(source, f"{workload.uid} is on network {workload.network!r}: cross-network is unsupported")
    authority = socket_text(ip, port)
    if service is None and workload.waypoint is not None and not _is_waypoint_of(state, source, workload):
        waypoint = _resolve_waypoint(state, workload.waypoint, source)
        if waypoint is None:
            return _deny(source, f"waypoint of workload {workload.uid} cannot be resolved")
        return _via_waypoint(source, waypoint, authority, None, f"workload {workload.uid} has a waypoint")
    if workload.tunnel_protocol is TunnelProtocol.HBONE:
        return Decision(
            route=Route.HBONE,
            reason=f"{workload.uid} is in the mesh",
            source=source,
            connect_to=(ip, hbone_port),
            authority=authority,
            expected_identities=_identities(workload, service),
            destination_workload=workload,
            destination_service=service,
        )
    return Decision(
        route=Route.TCP,
        reason=f"{workload.uid} is not in the mesh (tunnel {workload.tunnel_protocol})",
        source=source,
        connect_to=(ip, port),
        destination_workload=workload,
        destination_service=service,
    )


def _via_waypoint(source: Workload, waypoint: _Waypoint, authority: str, service: Service | None, why: str) -> Decision:
    return Decision(
        route=Route.HBONE,
        reason=why,
        source=source,
        connect_to=(waypoint.ip, waypoint.port),
        authority=authority,
        expected_identities=waypoint.identities,
        destination_workload=waypoint.workload,
        destination_service=service,
        via_waypoint=True,
    )


def _resolve_waypoint(state: Lookup, gateway: GatewayAddress, source: Workload) -> _Waypoint | None:
    """The waypoint workload behind a GatewayAddress (istio/ztunnel: fetch_waypoint): a hostname
    names its service; an IP is usually the waypoint service's VIP, else a waypoint pod's IP. A
    service is load balanced on the HBONE port like any other."""
    target = gateway.destination
    if isinstance(target, NamespacedHostname):
        service = state.service(target.key)
        family = 4
    else:
        service = state.service_by_vip(target.address, gateway.hbone_mtls_port, target.network)
        family = target.address.version
        if service is None:
            workload = state.workload_by_ip(target.address, target.network)
            if workload is None:
                return None
            return _Waypoint(workload, target.address, gateway.hbone_mtls_port, (workload.identity,))
    if service is None:
        return None
    endpoint = state.pick_endpoint(service, gateway.hbone_mtls_port, source)
    ip = _address_for(endpoint.workload, family) if endpoint is not None else None
    if endpoint is None or ip is None:
        return None
    return _Waypoint(endpoint.workload, ip, endpoint.target_port, _identities(endpoint.workload, service))


def _is_waypoint_of(state: Lookup, source: Workload, workload: Workload) -> bool:
    """Whether `source` is the workload's waypoint sending on (istio/ztunnel: check_from_waypoint):
    the waypoint's identity, from one of the waypoint's addresses."""
    target = workload.waypoint
    if target is None:
        return False
    if isinstance(target.destination, NamespacedHostname):
        service = state.service(target.destination.key)
    else:
        service = state.service_by_vip(target.destination.address, target.hbone_mtls_port, target.destination.network)
        if service is None:
            waypoint = state.workload_by_ip(target.destination.address, target.destination.network)
            return waypoint is not None and waypoint.uid == source.uid
    # A waypoint service: its endpoints list it in `services`.
    return service is not None and service.key in source.services


def _identities(workload: Workload, service: Service | None) -> tuple[Identity, ...]:
    """The workload's identity, then the service's SANs that are mesh identities (ztunnel:
    workload_and_services_san; a SAN that is not a SPIFFE identity cannot be checked, so skipped)."""
    out = [workload.identity]
    for san in service.subject_alt_names if service is not None else ():
        try:
            identity = Identity.parse(san)
        except IdentityError:
            continue
        if identity not in out:
            out.append(identity)
    return tuple(out)


def _address_for(workload: Workload, version: int) -> IpAddress | None:
    """The workload's address of the IP family the client used, else its first."""
    same = [ip for ip in workload.addresses if ip.version == version]
    return (same or list(workload.addresses) or [None])[0]


def _passthrough(source: Workload, ip: IpAddress, port: int, why: str, service: Service | None = None) -> Decision:
    return Decision(route=Route.TCP, reason=why, source=source, connect_to=(ip, port), destination_service=service)


def _deny(source: Workload, why: str, service: Service | None = None) -> Decision:
    return Decision(route=Route.DENY, reason=why, source=source, destination_service=service)
