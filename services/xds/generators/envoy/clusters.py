"""Clusters and ClusterLoadAssignments of a target, with the DestinationRule settings gRPC applies.

Shapes (reference grpc-proxyless-xds, "Cluster", "ClusterLoadAssignment"):
- a Cluster is `type: EDS` with `eds_cluster_config.eds_config = {ads: {}, resource_api_version:
  V3}` (STATIC, or EDS from anything but ADS, is NACKed);
- `lb_policy` is ROUND_ROBIN or RING_HASH only (RANDOM, LEAST_REQUEST are NACKed), so Istio's
  `simple` policies all become ROUND_ROBIN and `consistentHash` (ring hash or maglev) RING_HASH,
  with `ring_hash_lb_config` bounded by gRPC's 8M (gRFC A42);
- each ClusterLoadAssignment has one locality, with `locality` set (empty) and
  `load_balancing_weight: 1` (a locality without a weight is dropped silently and calls fail),
  holding HEALTHY socket-address endpoints;
- `connectionPool.http.http2MaxRequests` becomes the circuit breaker `max_requests` (gRFC A32).

Subsets (`outbound|{port}|{subset}|{host}`) keep the endpoints whose labels the subset selects.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import duration_pb2

from .resources import cluster_name
from .targets import Endpoint

Json = dict[str, Any]

RING_SIZE_MAX = 8 * 1024 * 1024  # gRPC refuses larger rings (A42)
CONNECT_TIMEOUT = duration_pb2.Duration(seconds=10)  # Istio's default connectTimeout
CHANNEL_ID = "io.grpc.channel_id"  # the filter-state key gRPC hashes to keep one channel on one endpoint


def port_policy(dr: Json | None, port: int, subset: Json | None = None) -> Json:
    """The traffic policy for one port (and subset): the rule's, overridden field by field by its
    `portLevelSettings` entry for the port, then by the subset's policy (Istio's
    MergeTrafficPolicy)."""
    if dr is None:
        return {}
    base = dict((dr.get("spec") or {}).get("trafficPolicy") or {})
    layers = [base]
    if subset is not None and subset.get("trafficPolicy"):
        layers.append(subset["trafficPolicy"])
    merged: Json = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if k != "portLevelSettings"})
        for setting in layer.get("portLevelSettings") or []:
            if (setting.get("port") or {}).get("number") == port:
                merged.update({k: v for k, v in setting.items() if k != "port"})
    return merged


def subsets(dr: Json | None) -> list[Json]:
    """The named subsets of a DestinationRule (first of a repeated name wins)."""
    seen: dict[str, Json] = {}
    for subset in ((dr or {}).get("spec") or {}).get("subsets") or []:
        if subset.get("name"):
            seen.setdefault(subset["name"], subset)
    return list(seen.values())


def _ring_hash(consistent: Json) -> cluster_pb2.Cluster.RingHashLbConfig:
    size = (consistent.get("ringHash") or {}).get("minimumRingSize") or consistent.get("minimumRingSize")
    config = cluster_pb2.Cluster.RingHashLbConfig()
    if size:
        config.minimum_ring_size.value = min(int(size), RING_SIZE_MAX)
        config.maximum_ring_size.value = RING_SIZE_MAX
    return config


def cluster(host: str, port: int, policy: Json, subset: str = "") -> cluster_pb2.Cluster:
    """The EDS cluster of one port (and subset) of a host, load-balanced as the policy asks."""
    name = cluster_name(host, port, subset)
    out = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=CONNECT_TIMEOUT,
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    out.eds_cluster_config.eds_config.CopyFrom(
        config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
        )
    )
    consistent = (policy.get("loadBalancer") or {}).get("consistentHash")
    if consistent is not None:
        out.lb_policy = cluster_pb2.Cluster.RING_HASH
        out.ring_hash_lb_config.CopyFrom(_ring_hash(consistent))
    max_requests = ((policy.get("connectionPool") or {}).get("http") or {}).get("http2MaxRequests")
    if max_requests:
        threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds()
        threshold.max_requests.value = int(max_requests)
        out.circuit_breakers.thresholds.append(threshold)
    return out


def hash_policy(policy: Json) -> list[rc.RouteAction.HashPolicy]:
    """The route hash policy a consistentHash asks for, in the forms gRPC hashes (A42): a header,
    or (for `useSourceIp`) the client channel's id, which keeps one client on one endpoint."""
    consistent = (policy.get("loadBalancer") or {}).get("consistentHash")
    if not consistent:
        return []
    if consistent.get("httpHeaderName"):
        header = rc.RouteAction.HashPolicy.Header(header_name=consistent["httpHeaderName"].lower())
        return [rc.RouteAction.HashPolicy(header=header)]
    if consistent.get("useSourceIp"):
        return [rc.RouteAction.HashPolicy(filter_state=rc.RouteAction.HashPolicy.FilterState(key=CHANNEL_ID))]
    return []  # cookies and query parameters do not exist for gRPC calls: gRPC then hashes randomly


def load_assignment(name: str, endpoints: tuple[Endpoint, ...]) -> endpoint_pb2.ClusterLoadAssignment:
    """One locality (weight 1) holding every endpoint as HEALTHY; no locality when none is ready."""
    lb_endpoints = [
        ec.LbEndpoint(
            endpoint=ec.Endpoint(
                address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=e.ip, port_value=e.port))
            ),
            health_status=health_check_pb2.HEALTHY,
        )
        for e in endpoints
    ]
    out = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if lb_endpoints:
        # gRPC NACKs a LocalityLbEndpoints without `locality` ("endpoints[0].locality error:field
        # not present"): an empty Locality must be set explicitly.
        locality = ec.LocalityLbEndpoints(locality=base_pb2.Locality(), lb_endpoints=lb_endpoints)
        locality.load_balancing_weight.value = 1
        out.endpoints.append(locality)
    return out


def subset_endpoints(endpoints: tuple[Endpoint, ...], labels: dict[str, str]) -> tuple[Endpoint, ...]:
    """The endpoints a subset's labels select."""
    return tuple(e for e in endpoints if all(e.labels.get(k) == v for k, v in labels.items()))
