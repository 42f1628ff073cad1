"""An ingress gateway's Clusters and ClusterLoadAssignments (docs/ingress.md, "Data path (contract)"
item 3), and the lookup its routes are translated with.

The gateway's routes use the waypoint's cluster names and shapes (`inbound-vip|{port}|{subset}|{host}`,
waypoint_clusters.py), with two differences:
- a backendRef to a Service in another namespace is usable when a ReferenceGrant there allows the
  route's kind from the route's namespace (GEP-709; the same check as the route status of the
  ingress job, mesh/gateway_refs.py);
- a backend Service labelled `istio.io/ingress-use-waypoint: "true"` that is bound to a waypoint
  (and has a VIP) is reached through that waypoint, as Istio's ingress does: the cluster is
  `inbound-vip|{port}|waypoint|{host}`, its endpoints are the waypoint's ready pods, each with
  `address` = the Service's VIP and port (the `:authority` the waypoint routes by) and
  `filter_metadata["istio"]` = `{"tunnel": "hbone", "identity": <the waypoint pod's SPIFFE id>,
  "hbone_address": "{pod IP}:15008"}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf.message import Message

from mesh.gateway_refs import GATEWAY_GROUP, ObjectKey, reference_permitted
from services.xds.generators.view import labels_of
from services.xds.generators.waypoints import GATEWAY_NAME, HBONE_MTLS_PORT, service_waypoint
from services.xds.model import PODS, SERVICES

from .clusters import port_policy
from .lookup import Lookup
from .resources import inbound_cluster_name, service_host, service_of_host
from .targets import Endpoint, Target, pod_identity, pod_ip, service_target
from .waypoint_clusters import (
    ISTIO_METADATA,
    cluster_resources,
    target_of,
    upstream_protocol,
    waypoint_cluster,
    waypoint_load_assignment,
)

Json = dict[str, Any]

INGRESS_USE_WAYPOINT = "istio.io/ingress-use-waypoint"
WAYPOINT_SUBSET = "waypoint"  # the subset part of a cluster reached through the Service's waypoint
GATEWAY_READ = "gateway:"  # prefix of the dependency key of a Gateway read (a backend's waypoint)


@dataclass(frozen=True)
class ViaWaypoint:
    """A backend Service reached through its waypoint: the Service's target and the waypoint."""

    target: Target
    waypoint: tuple[str, str]


@dataclass
class IngressLookup(Lookup):
    """The lookup of one ingress gateway's translation: waypoint-style names and HTTP forms, backends
    in other namespaces by ReferenceGrant, and the waypoint variant of a backend's clusters."""

    grants: list[Json] = field(default_factory=list)
    waypoint: bool = True

    def backend_allowed(self, route_kind: str, route_namespace: str, namespace: str, name: str) -> bool:
        """A ReferenceGrant in `namespace` allows `route_kind`s of `route_namespace` to the Service."""
        return reference_permitted(
            self.grants, GATEWAY_GROUP, route_kind, route_namespace, "", "Service", ObjectKey(namespace, name)
        )

    def cluster(self, host: str, port: int, subset: str = "") -> str:
        """The waypoint variant for a backend sent through its waypoint, else the waypoint's name."""
        if not subset and self.via_waypoint(host) is not None:
            return inbound_cluster_name(host, port, WAYPOINT_SUBSET)
        return super().cluster(host, port, subset)

    def via_waypoint(self, host: str) -> ViaWaypoint | None:
        """The Service of `host` when ingress traffic to it goes through its waypoint."""
        self.reads.add(host)
        ref = service_of_host(host)
        svc = self.view.get(SERVICES, *ref) if ref else None
        if svc is None or labels_of(svc).get(INGRESS_USE_WAYPOINT) != "true":
            return None
        binding = service_waypoint(self.view, svc)
        if binding.waypoint is not None:
            self.reads.add(GATEWAY_READ + "/".join(binding.waypoint))
        target = service_target(self.view, svc)
        if not binding.bound or binding.waypoint is None or target is None or not target.vips:
            return None
        return ViaWaypoint(target, binding.waypoint)


def _waypoint_pods(lookup: IngressLookup, waypoint: tuple[str, str]) -> list[tuple[str, Json]]:
    """(pod IP, pod) of the waypoint's ready pods, by name. Reads the waypoint's Service host, so a
    waypoint pod's change (its Service selects it) re-translates the gateway."""
    namespace, name = waypoint
    lookup.reads.add(service_host(name, namespace))
    found = []
    for ns, pod_name in sorted(lookup.view.matching(PODS, namespace, {GATEWAY_NAME: name})):
        pod = lookup.view.get(PODS, ns, pod_name)
        ip = pod_ip(pod) if pod is not None else None
        if pod is not None and ip is not None:
            found.append((ip, pod))
    return found


def waypoint_variant(lookup: IngressLookup, via: ViaWaypoint, port: int) -> list[Message]:
    """`inbound-vip|{port}|waypoint|{host}` and its endpoints: one per waypoint pod, addressed to the
    Service's VIP and port, dialled at the pod's HBONE port."""
    host = via.target.host
    declared = next((p for p in via.target.ports if p.number == port), None)
    protocol = upstream_protocol(declared) if declared is not None else "auto"
    policy = port_policy(lookup.destination_rule(host), port)
    cluster = waypoint_cluster(host, port, policy, WAYPOINT_SUBSET, protocol)
    pods = _waypoint_pods(lookup, via.waypoint)
    vip = via.target.vips[0]
    endpoints = tuple(Endpoint(vip, port, tunnel="hbone", identity=pod_identity(pod)) for _, pod in pods)
    assignment: endpoint_pb2.ClusterLoadAssignment = waypoint_load_assignment(cluster.name, endpoints)
    for locality in assignment.endpoints:
        for lb, (ip, _) in zip(locality.lb_endpoints, pods, strict=True):
            hbone = f"[{ip}]:{HBONE_MTLS_PORT}" if ":" in ip else f"{ip}:{HBONE_MTLS_PORT}"
            lb.metadata.filter_metadata[ISTIO_METADATA].update({"hbone_address": hbone})
    return [cluster, assignment]


def gateway_clusters(lookup: IngressLookup, wanted: set[str]) -> list[Message]:
    """The Clusters and ClusterLoadAssignments of every cluster name the gateway's routes use."""
    out: list[Message] = []
    for name in sorted(wanted):
        _, port, subset, host = name.split("|", 3)
        if subset == WAYPOINT_SUBSET:
            via = lookup.via_waypoint(host)
            if via is not None:
                out += waypoint_variant(lookup, via, int(port))
                continue
        target = target_of(lookup, host, {})
        if target is not None:
            out += cluster_resources(lookup, target, int(port), subset)
    return out
