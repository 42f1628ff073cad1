"""Names and wire wrapping of the Envoy resources served to proxyless gRPC clients and waypoints.

Naming follows Istio's proxyless gRPC generator (istio/istio: pilot/pkg/networking/grpcgen) and
gRPC's xDS name resolver (gRFC A27): the channel target `xds:///{host}` or `xds:///{host}:{port}`
is the Listener name; the HttpConnectionManager's `route_config_name` is the same name (so RDS asks
for it); clusters are Istio's `outbound|{port}|{subset}|{host}`, and each cluster's
ClusterLoadAssignment carries the cluster's name (reference grpc-proxyless-xds, "Names").
Waypoints have names of their own (`waypoint/{N}/{G}`, `inbound-vip|…`, docs/waypoint.md), since
their resources carry fields a gRPC client would refuse; so do ingress gateways (`gateway/{N}/{G}`,
`gateway|{N}|{G}|{port}`, SDS Secrets `kubernetes://{ns}/{name}`, docs/ingress.md).
"""

from __future__ import annotations

from google.protobuf import any_pb2
from google.protobuf.message import Message

from services.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

DOMAIN_SUFFIX = "svc.cluster.local"
FAULT_FILTER = "envoy.filters.http.fault"  # the key of typed_per_filter_config, and the filter's name
ROUTER_FILTER = "envoy.filters.http.router"
ENVOY_TYPE_URLS = (LISTENER, ROUTE, CLUSTER, ENDPOINT, SECRET)

# The message type served under each type URL (an Any's type URL is the message's full name).
_TYPE_URL_OF = {
    "envoy.config.listener.v3.Listener": LISTENER,
    "envoy.config.route.v3.RouteConfiguration": ROUTE,
    "envoy.config.cluster.v3.Cluster": CLUSTER,
    "envoy.config.endpoint.v3.ClusterLoadAssignment": ENDPOINT,
    "envoy.extensions.transport_sockets.tls.v3.Secret": SECRET,
}


def service_host(name: str, namespace: str) -> str:
    """A Kubernetes Service's hostname: `{name}.{ns}.svc.cluster.local`."""
    return f"{name}.{namespace}.{DOMAIN_SUFFIX}"


def resolve_host(host: str, namespace: str) -> str:
    """A host as Istio reads it in a VirtualService or DestinationRule: a short name (no dot) is a
    Service of the object's namespace (istio/istio: pkg/config/host ResolveShortnameToFQDN); any
    other name is taken as written."""
    return service_host(host, namespace) if host and "." not in host and host != "*" else host


def service_of_host(host: str) -> tuple[str, str] | None:
    """(namespace, name) of a Kubernetes Service hostname, or None for any other host."""
    head, _, rest = host.partition(".")
    namespace, _, suffix = rest.partition(".")
    if head and namespace and suffix == DOMAIN_SUFFIX:
        return namespace, head
    return None


def cluster_name(host: str, port: int, subset: str = "") -> str:
    """Istio's outbound cluster name, `outbound|{port}|{subset}|{host}`."""
    return f"outbound|{port}|{subset}|{host}"


def inbound_cluster_name(host: str, port: int, subset: str = "") -> str:
    """A waypoint's cluster for a Service port (docs/waypoint.md): `inbound-vip|{port}|{subset}|{host}`."""
    return f"inbound-vip|{port}|{subset}|{host}"


def inbound_route_name(host: str, port: int) -> str:
    """A waypoint's RouteConfiguration for a Service port: `inbound-vip|{port}|http|{host}`."""
    return f"inbound-vip|{port}|http|{host}"


def waypoint_listener_name(namespace: str, name: str) -> str:
    """The Listener a waypoint subscribes to: `waypoint/{N}/{G}`."""
    return f"waypoint/{namespace}/{name}"


def is_waypoint_name(name: str) -> bool:
    """Whether a resource name is one only waypoints may read (Listener, inbound-vip and, for
    workload traffic, inbound-pod names)."""
    return name.startswith(("waypoint/", "inbound-vip|", "inbound-pod"))


def gateway_listener_name(namespace: str, name: str) -> str:
    """The Listener an ingress gateway subscribes to: `gateway/{N}/{G}` (docs/ingress.md)."""
    return f"gateway/{namespace}/{name}"


def gateway_route_name(namespace: str, name: str, port: int) -> str:
    """An ingress gateway's RouteConfiguration for one port: `gateway|{N}|{G}|{port}`."""
    return f"gateway|{namespace}|{name}|{port}"


SDS_PREFIX = "kubernetes://"  # Istio's SDS names for Kubernetes Secrets


def sds_name(namespace: str, name: str) -> str:
    """An SDS Secret resource naming a Kubernetes Secret: `kubernetes://{ns}/{name}`."""
    return f"{SDS_PREFIX}{namespace}/{name}"


def is_restricted_name(name: str) -> bool:
    """Whether only the readers the translator records may see a resource: a waypoint's, an
    ingress gateway's Listener and routes, and SDS Secrets."""
    return is_waypoint_name(name) or name.startswith(("gateway/", "gateway|", SDS_PREFIX))


def listener_name(host: str, port: int | None = None) -> str:
    """`{host}` for the Service's default port, `{host}:{port}` for each port."""
    return host if port is None else f"{host}:{port}"


def to_any(message: Message) -> any_pb2.Any:
    """Pack an Envoy resource as itself (`type.googleapis.com/envoy.config....`)."""
    if message.DESCRIPTOR.full_name not in _TYPE_URL_OF:
        raise TypeError(f"not an Envoy xDS resource: {message.DESCRIPTOR.full_name}")
    out = any_pb2.Any()
    out.Pack(message, type_url_prefix="type.googleapis.com/")
    return out


def type_url(message: Message) -> str:
    """The type URL an Envoy resource is served under."""
    return _TYPE_URL_OF[message.DESCRIPTOR.full_name]


def resource_name(message: Message) -> str:
    """The xDS name of an Envoy resource (a ClusterLoadAssignment is named by its cluster)."""
    if message.DESCRIPTOR.full_name == "envoy.config.endpoint.v3.ClusterLoadAssignment":
        return message.cluster_name  # type: ignore[attr-defined]
    return message.name  # type: ignore[attr-defined]


def pack(message: Message) -> any_pb2.Any:
    """An Any holding `message` (for typed_config and typed_per_filter_config)."""
    out = any_pb2.Any()
    out.Pack(message, type_url_prefix="type.googleapis.com/")
    return out
