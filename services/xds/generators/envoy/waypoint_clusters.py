"""A waypoint's Clusters and ClusterLoadAssignments (`inbound-vip|{port}|{subset}|{host}`).

Unlike a gRPC client's clusters (clusters.py), a waypoint's take every DestinationRule setting an
HTTP proxy applies (Istio: networking/core/cluster_traffic_policy.go), in Envoy's own fields:
- `loadBalancer.simple`: ROUND_ROBIN, LEAST_REQUEST (Istio's LEAST_CONN is its old name), RANDOM;
  PASSTHROUGH and UNSPECIFIED stay ROUND_ROBIN; `consistentHash` is RING_HASH;
- `connectionPool`: `tcp.maxConnections` → `max_connections`, `http.http1MaxPendingRequests` →
  `max_pending_requests`, `http.http2MaxRequests` → `max_requests`, `http.maxRetries` →
  `max_retries`, in `circuit_breakers.thresholds[0]` (Envoy's DEFAULT priority); `tcp.connectTimeout`
  → `connect_timeout`;
- `outlierDetection`: `consecutive5xxErrors` (or the deprecated `consecutiveErrors`) →
  `consecutive_5xx`, `interval`, `baseEjectionTime`, `maxEjectionPercent`.

Endpoints carry `metadata.filter_metadata["istio"] = {"tunnel", "identity"}`: how the waypoint
reaches each one (HBONE to a captured pod, else plain TCP) and whom it must find there; a pod's
also `"workload"` (the pod's name) and `"namespace"`, the waypoint's destination labels.

`common_lb_config.healthy_panic_threshold` is 0, as Istio sets it: an ejected endpoint is never
used again just because too few are left (Envoy's default of 50 % would bring it back).

`cluster_resources` and `target_of` build the clusters a route configuration names, for waypoints
and ingress gateways (gateway_clusters.py) alike.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.message import Message

from mesh.resources.networking.common import duration_nanos
from services.xds.model import SERVICE_ENTRIES, SERVICES

from .clusters import CONNECT_TIMEOUT, cluster, load_assignment, port_policy, subset_endpoints, subsets
from .lookup import Lookup
from .resources import inbound_cluster_name, service_of_host
from .routing import duration
from .targets import Endpoint, Target, TargetPort, service_entry_targets, service_target

Json = dict[str, Any]

ISTIO_METADATA = "istio"  # the filter_metadata key the waypoint reads an endpoint's tunnel from
_LB = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
}


HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HTTP2 = ("http2", "grpc", "grpc-web", "h2c", "kubernetes.io/h2c")


def _nanos(value: Any) -> int | None:
    return duration_nanos(value) if isinstance(value, str) and value else None


def _circuit_breaker(pool: Json) -> circuit_breaker_pb2.CircuitBreakers.Thresholds | None:
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds()
    limits = {
        "max_connections": tcp.get("maxConnections"),
        "max_pending_requests": http.get("http1MaxPendingRequests"),
        "max_requests": http.get("http2MaxRequests"),
        "max_retries": http.get("maxRetries"),
    }
    for name, value in limits.items():
        if value:
            getattr(threshold, name).value = int(value)
    return threshold if any(limits.values()) else None


def _outlier(spec: Json) -> outlier_detection_pb2.OutlierDetection:
    out = outlier_detection_pb2.OutlierDetection()
    errors = spec.get("consecutive5xxErrors", spec.get("consecutiveErrors"))
    if errors is not None:
        out.consecutive_5xx.value = int(errors)
    for field_name, key in (("interval", "interval"), ("base_ejection_time", "baseEjectionTime")):
        nanos = _nanos(spec.get(key))
        if nanos is not None:
            getattr(out, field_name).CopyFrom(duration(nanos))
    if spec.get("maxEjectionPercent") is not None:
        out.max_ejection_percent.value = int(spec["maxEjectionPercent"])
    return out


def upstream_protocol_options(protocol: str) -> any_pb2.Any:
    """Envoy's HttpProtocolOptions for the HTTP version spoken to the endpoints: `http2` (the
    port's appProtocol or name says http2 / grpc / h2c), `http1` (it says http), else the
    downstream's version (Istio's USE_DOWNSTREAM_PROTOCOL for ports it cannot tell)."""
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if protocol == "http2":
        options.explicit_http_config.http2_protocol_options.SetInParent()
    elif protocol == "http1":
        options.explicit_http_config.http_protocol_options.SetInParent()
    else:
        options.use_downstream_protocol_config.SetInParent()
    packed = any_pb2.Any()
    packed.Pack(options)
    return packed


def waypoint_cluster(
    host: str, port: int, policy: Json, subset: str = "", protocol: str = "auto"
) -> cluster_pb2.Cluster:
    """The EDS cluster of one Service port (and subset) behind a waypoint, with the policy's load
    balancing, circuit breaking and outlier detection, and the HTTP version `protocol` names."""
    out = cluster(host, port, policy, subset)
    out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(upstream_protocol_options(protocol))
    out.name = inbound_cluster_name(host, port, subset)
    balancer = policy.get("loadBalancer") or {}
    if balancer.get("consistentHash") is None:
        out.lb_policy = _LB.get(balancer.get("simple") or "", cluster_pb2.Cluster.ROUND_ROBIN)
    pool = policy.get("connectionPool") or {}
    out.ClearField("circuit_breakers")
    threshold = _circuit_breaker(pool)
    if threshold is not None:
        out.circuit_breakers.thresholds.append(threshold)
    timeout = _nanos((pool.get("tcp") or {}).get("connectTimeout"))
    out.connect_timeout.CopyFrom(duration(timeout) if timeout else CONNECT_TIMEOUT)
    if policy.get("outlierDetection"):
        out.outlier_detection.CopyFrom(_outlier(policy["outlierDetection"]))
    out.common_lb_config.healthy_panic_threshold.SetInParent()  # 0 %: panic mode off
    return out


def waypoint_load_assignment(name: str, endpoints: tuple[Endpoint, ...]) -> endpoint_pb2.ClusterLoadAssignment:
    """The endpoints of a waypoint cluster, each with its tunnel and identity."""
    out = load_assignment(name, endpoints)
    for locality in out.endpoints:
        for lb, endpoint in zip(locality.lb_endpoints, endpoints, strict=True):
            istio = struct_pb2.Struct()
            fields = {"tunnel": endpoint.tunnel, "identity": endpoint.identity}
            if endpoint.workload:
                fields |= {"workload": endpoint.workload, "namespace": endpoint.namespace}
            istio.update(fields)
            lb.metadata.filter_metadata[ISTIO_METADATA].CopyFrom(istio)
    return out


def upstream_protocol(port: TargetPort) -> str:
    """`http2`, `http1` or `auto`, from the port's `appProtocol` or name prefix (Istio's rule)."""
    protocol = (port.app_protocol or port.name.split("-", 1)[0]).lower()
    if protocol in _HTTP2:
        return "http2"
    return "http1" if protocol == "http" else "auto"


def cluster_resources(lookup: Lookup, target: Target, port: int, subset_name: str) -> list[Message]:
    """The cluster (and endpoints) of one port and subset of a target."""
    dr = lookup.destination_rule(target.host)
    endpoints: tuple[Endpoint, ...] = target.endpoints.get(port, ())
    subset = next((s for s in subsets(dr) if s["name"] == subset_name), None)
    if subset_name and subset is None:
        return []
    if subset is not None:
        endpoints = subset_endpoints(endpoints, subset.get("labels") or {})
    declared = next((p for p in target.ports if p.number == port), None)
    protocol = upstream_protocol(declared) if declared is not None else "auto"
    out = waypoint_cluster(target.host, port, port_policy(dr, port, subset), subset_name, protocol)
    return [out, waypoint_load_assignment(out.name, endpoints)]


def target_of(lookup: Lookup, host: str, known: dict[str, Target]) -> Target | None:
    """The target serving `host`: a bound one, else its Service, else the oldest ServiceEntry."""
    if host in known:
        return known[host]
    lookup.reads.add(host)
    ref = service_of_host(host)
    svc = lookup.view.get(SERVICES, *ref) if ref else None
    if svc is not None:
        return service_target(lookup.view, svc)
    for se in lookup.index.objects(SERVICE_ENTRIES, host):
        for target in service_entry_targets(lookup.view, se):
            if target.host == host:
                return target
    return None
