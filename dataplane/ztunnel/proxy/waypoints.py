"""Whether an inbound connection comes from the destination's waypoint (reference §6: "If the
target has a waypoint, the source must be that waypoint: same identity, and a source IP among the
waypoint's IPs"; istio/ztunnel: src/proxy.rs check_from_waypoint). Pure over the store's reads.
"""

from __future__ import annotations

import ipaddress

from mesh.identity import Identity

from ..state import NamespacedHostname, StateStore, Workload


def waypoint_workloads(store: StateStore, workload: Workload) -> list[Workload]:
    """The workloads that serve as `workload`'s waypoint: the endpoints of the waypoint service
    (named by hostname or VIP), or the workload holding the waypoint's IP."""
    gateway = workload.waypoint
    if gateway is None:
        return []
    target = gateway.destination
    if isinstance(target, NamespacedHostname):
        service = store.service(target.key)
    else:
        service = store.service_by_vip(target.address, gateway.hbone_mtls_port, target.network)
        if service is None:
            held = store.workload_by_ip(target.address, target.network)
            return [held] if held is not None else []
    if service is None:
        return []
    return [endpoint.workload for endpoint in store.endpoints(service, gateway.hbone_mtls_port)]


def from_waypoint(store: StateStore, workload: Workload, peer: Identity | None, client_ip: str) -> bool:
    """True when the peer is one of `workload`'s waypoints: its identity, from one of its IPs."""
    if peer is None:
        return False
    ip = ipaddress.ip_address(client_ip)
    return any(w.identity == peer and ip in w.addresses for w in waypoint_workloads(store, workload))
