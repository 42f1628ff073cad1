"""Workload-addressed traffic through a waypoint (docs/waypoint.md, "Workload traffic").

A pod bound to a waypoint whose `istio.io/waypoint-for` is `workload` or `all` gets
`Workload.waypoint` (waypoints.workload_waypoint), so a source's ztunnel sends what it dials at the
pod's own IP to the waypoint, with `:authority` = `{pod IP}:{port}` (reference §6, step 3). Pods
need not declare ports, so the waypoint gets one filter chain per pod that matches the pod's IP on
any port (no `destination_port`), and a single original-destination cluster, as Istio's waypoint
forwards workload traffic to the address the client dialled (connect_originate, ORIGINAL_DST):

- FilterChain `workload/{ns}/{pod}`: `prefix_ranges` = the pod IP /32 (or /128),
  `metadata.filter_metadata["istio"]` = the pod as an endpoint (`tunnel`, `identity`, `workload`,
  `namespace`: the fields of a ClusterLoadAssignment endpoint), an HttpConnectionManager (codec
  AUTO) whose RDS is `inbound-pod`;
- RouteConfiguration `inbound-pod`: one virtual host, one catch-all route to the cluster
  `inbound-pod` with Istio's default retries;
- Cluster `inbound-pod`: `type: ORIGINAL_DST`, `lb_policy: CLUSTER_PROVIDED`; the waypoint sends to
  the CONNECT's authority with the chain's metadata (tunnel, identity to check).

Policies apply to these chains when they target the waypoint's Gateway (or, from the root
namespace, the GatewayClass): no Service is involved.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from services.xds.generators.view import ConfigView, labels_of, meta
from services.xds.generators.waypoints import USE_WAYPOINT, USE_WAYPOINT_NAMESPACE, workload_waypoint
from services.xds.model import PODS

from .clusters import CONNECT_TIMEOUT
from .routing import http_retry_policy
from .targets import pod_identity, pod_ip, pod_tunnel
from .waypoint_clusters import ISTIO_METADATA

Json = dict[str, Any]

POD_ROUTE = "inbound-pod"  # the RouteConfiguration every workload chain names
POD_CLUSTER = "inbound-pod"  # the original-destination Cluster its route sends to


def chain_name(pod: Json) -> str:
    """`workload/{ns}/{pod}`."""
    return f"workload/{meta(pod).get('namespace', '')}/{meta(pod)['name']}"


def bound_pods(view: ConfigView, gateway: tuple[str, str]) -> list[Json]:
    """The pods whose workload traffic goes through `gateway` (namespace, name), with an IP, by
    (namespace, name). None unless the Gateway admits workloads (workload_waypoint checks it)."""
    found = []
    for pod in view.list(PODS):
        if pod_ip(pod) is None:
            continue
        binding = workload_waypoint(view, pod)
        if binding.bound and binding.waypoint == gateway:
            found.append(pod)
    return sorted(found, key=lambda p: (meta(p).get("namespace", ""), meta(p)["name"]))


def named_gateways(kind: str, objects: Iterable[Json], view: ConfigView) -> set[tuple[str, str]]:
    """What to translate again when one of these pods (before or after a change) or namespaces
    changes: the waypoints a pod is bound to for workload traffic, and those a namespace label
    names, bound or not (a Gateway's own changes re-translate it anyway)."""
    out: set[tuple[str, str]] = set()
    for obj in objects:
        if kind == PODS:
            binding = workload_waypoint(view, obj)
            if binding.bound and binding.waypoint is not None:
                out.add(binding.waypoint)
            continue
        labels = labels_of(obj)  # a Namespace: its label binds the pods that have none
        if labels.get(USE_WAYPOINT) and labels[USE_WAYPOINT] != "none":
            out.add((labels.get(USE_WAYPOINT_NAMESPACE) or meta(obj)["name"], labels[USE_WAYPOINT]))
    return out


def _prefix(ip: str) -> address_pb2.CidrRange:
    address = ipaddress.ip_address(ip)
    return address_pb2.CidrRange(
        address_prefix=str(address), prefix_len=wrappers_pb2.UInt32Value(value=address.max_prefixlen)
    )


def pod_metadata(pod: Json) -> struct_pb2.Struct:
    """The pod as the waypoint's endpoint: tunnel, identity, workload, namespace."""
    out = struct_pb2.Struct()
    out.update(
        {
            "tunnel": pod_tunnel(pod),
            "identity": pod_identity(pod),
            "workload": meta(pod)["name"],
            "namespace": meta(pod).get("namespace", ""),
        }
    )
    return out


def workload_chain(pod: Json, manager: lc.Filter) -> lc.FilterChain:
    """The chain of one bound pod: its IP on any port, the pod in the metadata."""
    ip = pod_ip(pod)
    assert ip is not None, "bound_pods only yields pods with an IP"
    chain = lc.FilterChain(
        name=chain_name(pod),
        filter_chain_match=lc.FilterChainMatch(prefix_ranges=[_prefix(ip)]),
        filters=[manager],
    )
    chain.metadata.filter_metadata[ISTIO_METADATA].CopyFrom(pod_metadata(pod))
    return chain


def workload_resources() -> list[Message]:
    """The route configuration and original-destination cluster every workload chain uses."""
    route = rc.Route(name="default", match=rc.RouteMatch(prefix="/"))
    route.route.cluster = POD_CLUSTER
    retry = http_retry_policy(None, None)  # Istio's default retries, as on a Service's catch-all
    if retry is not None:
        route.route.retry_policy.CopyFrom(retry)
    config = route_pb2.RouteConfiguration(
        name=POD_ROUTE, virtual_hosts=[rc.VirtualHost(name=POD_ROUTE, domains=["*"], routes=[route])]
    )
    cluster = cluster_pb2.Cluster(
        name=POD_CLUSTER,
        type=cluster_pb2.Cluster.ORIGINAL_DST,
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        connect_timeout=CONNECT_TIMEOUT,
    )
    return [config, cluster]
