"""Choosing a service endpoint: ztunnel's kube-proxy role (istio/ztunnel: src/state.rs load_balance).

Pure functions over domain types; the store hands in the candidate workloads and a random source.
- A service port the service does not have has no endpoints.
- A workload serves a port when the service maps it to a target port, or, for a named target
  port (service target 0), when the workload's own `services` entry maps it.
- Unhealthy workloads are left out unless the service's health policy is ALLOW_ALL, and so are
  workloads with neither an address nor a hostname.
- With routing preferences (mode STRICT or FAILOVER) each endpoint is ranked by how many leading
  scopes it shares with the source; STRICT keeps only full matches, FAILOVER the best rank.
- The pick is random, weighted by capacity; capacity 0 is never picked.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import NamedTuple

from .service import LoadBalancingMode, RoutingScope, Service
from .workload import Workload


class Endpoint(NamedTuple):
    """A workload serving a service port, and the port to reach it on."""

    workload: Workload
    target_port: int


def target_port(service: Service, workload: Workload, service_port: int) -> int | None:
    """The port `workload` serves `service_port` of `service` on, or None when it does not.

    The workload's own mapping wins (a named targetPort resolved per pod), then the service's
    target port (find_upstream_from_service). An explicit 0 in both is read as "the service port"
    where ztunnel would dial port 0.
    """
    if service_port not in service.ports:
        return None
    service_target = service.ports[service_port]
    own = workload.services.get(service.key, {}).get(service_port)
    if service_target == 0 and own is None:
        return None  # a named target port this workload does not define (ztunnel skips it)
    return own or service_target or service_port


def endpoints(service: Service, candidates: Iterable[Workload], service_port: int) -> list[Endpoint]:
    """The endpoints of `service_port` among `candidates` (the workloads listing the service),
    healthy ones only unless the service allows all."""
    out = []
    for workload in candidates:
        if not (workload.healthy or service.allows_unhealthy):
            continue
        if not workload.addresses and not workload.hostname:
            continue  # unreachable here: only a network gateway could reach it (not supported)
        port = target_port(service, workload, service_port)
        if port is not None:
            out.append(Endpoint(workload, port))
    return out


def _shares(scope: RoutingScope, source: Workload, workload: Workload) -> bool:
    if scope is RoutingScope.REGION:
        return source.locality.region == workload.locality.region
    if scope is RoutingScope.ZONE:
        return source.locality.zone == workload.locality.zone
    if scope is RoutingScope.SUBZONE:
        return source.locality.subzone == workload.locality.subzone
    if scope is RoutingScope.NODE:
        return source.node == workload.node
    if scope is RoutingScope.CLUSTER:
        return source.cluster_id == workload.cluster_id
    return source.network == workload.network  # NETWORK


def _rank(scopes: tuple[RoutingScope, ...], source: Workload, workload: Workload) -> int:
    """How many leading scopes match: [network, region, zone] all equal ranks 3, a different
    region ranks 1 however the zones compare."""
    rank = 0
    for scope in scopes:
        if not _shares(scope, source, workload):
            break
        rank += 1
    return rank


def prefer_local(service: Service, options: list[Endpoint], source: Workload | None) -> list[Endpoint]:
    """The endpoints the service's routing preference keeps for `source` (all, without a source
    or without a STRICT/FAILOVER preference)."""
    lb = service.load_balancing
    if source is None or lb is None or lb.mode not in (LoadBalancingMode.STRICT, LoadBalancingMode.FAILOVER):
        return options
    ranked = [(_rank(lb.routing_preference, source, ep.workload), ep) for ep in options]
    if lb.mode is LoadBalancingMode.STRICT:
        ranked = [(rank, ep) for rank, ep in ranked if rank == len(lb.routing_preference)]
    best = max((rank for rank, _ in ranked), default=0)
    return [ep for rank, ep in ranked if rank == best]


def choose(options: list[Endpoint], rng: random.Random) -> Endpoint | None:
    """A random endpoint weighted by capacity; None when none has capacity."""
    weights = [ep.workload.capacity for ep in options]
    if sum(weights) <= 0:
        return None
    return rng.choices(options, weights=weights)[0]
