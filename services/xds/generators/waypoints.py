"""Waypoint binding: which waypoint, if any, a Service or workload sends its traffic through.

Follows istio/istio: pilot/pkg/serviceregistry/ambient/waypoints.go (reference §9):
- `istio.io/use-waypoint` on the object wins over its Namespace's label; the value `none` opts out
  (an object's `none` also stops the namespace's label from applying);
- `istio.io/use-waypoint-namespace`, read from the same labels as the name, points to a waypoint in
  another namespace (default: the object's own);
- the waypoint is a Gateway with `gatewayClassName: istio-waypoint`; it counts only once
  `status.addresses` is set (until then the binding is pending: WaypointIsNotReady);
- the object's namespace must be allowed by the `allowedRoutes` of the Gateway's HBONE listener
  (port 15008; default `Same`), else AttachmentDenied;
- `istio.io/waypoint-for` on the Gateway (default `service`) says what may bind: `service` fills
  only Service.waypoint, `workload` only Workload.waypoint, `all` both, `none` neither. A workload
  that only inherits its namespace's service waypoint is simply not bound (no error), as in
  fetchWaypointForWorkload.

The result says why, so the status job can write `istio.io/WaypointBound` with Istio's reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh.proto_gen.istio.workload import workload_pb2 as wl
from mesh.selectors import SelectorError, label_selector_from_object
from services.xds.model import GATEWAYS, NAMESPACES

from .resources import ip_bytes
from .view import ConfigView, labels_of

Json = dict[str, Any]

USE_WAYPOINT = "istio.io/use-waypoint"
USE_WAYPOINT_NAMESPACE = "istio.io/use-waypoint-namespace"
WAYPOINT_FOR = "istio.io/waypoint-for"
WAYPOINT_CLASS = "istio-waypoint"
HBONE_MTLS_PORT = 15008
# A waypoint's own Service and pods never get a waypoint (istio/istio: fetchWaypointForService,
# fetchWaypointForInstance).
MANAGED_BY = "gateway.istio.io/managed"
MESH_CONTROLLER = "istio.io-mesh-controller"
GATEWAY_NAME = "gateway.networking.k8s.io/gateway-name"

WAYPOINT_BOUND = "istio.io/WaypointBound"

SERVICE = "service"
WORKLOAD = "workload"
_ALLOWS = {SERVICE: ("service", "all"), WORKLOAD: ("workload", "all")}


@dataclass(frozen=True)
class WaypointBinding:
    """The outcome of resolving an object's waypoint.

    `waypoint` is the Gateway looked up as (namespace, name), whether or not it bound: whatever
    changes that Gateway must re-resolve this object. `address` is set only when bound. `reason`
    is empty when no waypoint was asked for (or the object opted out), else one of Istio's
    WaypointBound reasons.
    """

    waypoint: tuple[str, str] | None = None
    address: wl.GatewayAddress | None = None
    reason: str = ""
    message: str = ""

    @property
    def bound(self) -> bool:
        """Whether traffic goes through the waypoint."""
        return self.address is not None

    def condition(self) -> dict[str, str] | None:
        """The `istio.io/WaypointBound` condition, or None when no waypoint was asked for."""
        if not self.reason:
            return None
        status = "True" if self.bound else "False"
        return {"type": WAYPOINT_BOUND, "status": status, "reason": self.reason, "message": self.message}


NOT_REQUESTED = WaypointBinding()


def service_waypoint(view: ConfigView, obj: Json) -> WaypointBinding:
    """The waypoint of a Service or ServiceEntry (for Service.waypoint)."""
    if labels_of(obj).get(MANAGED_BY) == MESH_CONTROLLER:
        return NOT_REQUESTED  # the waypoint's own Service
    return _resolve(view, obj, SERVICE)


def workload_waypoint(view: ConfigView, obj: Json) -> WaypointBinding:
    """The waypoint of a Pod, WorkloadEntry or ServiceEntry endpoint (for Workload.waypoint).

    `obj` needs `metadata.namespace` and `metadata.labels`: for an inline ServiceEntry endpoint,
    Istio resolves with the ServiceEntry's namespace and the endpoint's own labels.
    """
    if GATEWAY_NAME in labels_of(obj):
        return NOT_REQUESTED  # an instance of a waypoint never goes through one
    return _resolve(view, obj, WORKLOAD)


def _resolve(view: ConfigView, obj: Json, traffic: str) -> WaypointBinding:
    namespace = (obj.get("metadata") or {}).get("namespace", "")
    own = labels_of(obj)
    if USE_WAYPOINT in own:
        source, labels = "object", own
    else:
        ns = view.get(NAMESPACES, "", namespace)
        labels = labels_of(ns) if ns else {}
        if USE_WAYPOINT not in labels:
            return NOT_REQUESTED
        source = "namespace"
    name = labels[USE_WAYPOINT]
    if name == "none":
        return NOT_REQUESTED  # Istio reserves "none": no waypoint, and no fallback to the namespace
    ref = (labels.get(USE_WAYPOINT_NAMESPACE) or namespace, name)
    binding = _bind(view, ref, namespace)
    if not binding.bound:
        return binding
    allowed = _traffic_type(view.get(GATEWAYS, *ref) or {})
    if allowed in _ALLOWS[traffic]:
        return binding
    if traffic == WORKLOAD and source == "namespace":
        return WaypointBinding(waypoint=ref)  # inherited service waypoint: not for workloads, not an error
    message = f'attempting to bind to traffic type "{traffic}" which the waypoint "{_key(ref)}" does not support'
    return WaypointBinding(waypoint=ref, reason="UnsupportedTrafficType", message=message)


def _bind(view: ConfigView, ref: tuple[str, str], from_namespace: str) -> WaypointBinding:
    """Look the waypoint up and check that it is ready and accepts `from_namespace`."""
    gateway = view.get(GATEWAYS, *ref)
    if gateway is None or not gateway_address(gateway):
        message = f'waypoint "{_key(ref)}" is not ready'
        return WaypointBinding(waypoint=ref, reason="WaypointIsNotReady", message=message)
    class_name = (gateway.get("spec") or {}).get("gatewayClassName")
    if class_name != WAYPOINT_CLASS:
        message = f'gateway "{_key(ref)}" has gatewayClassName "{class_name}", not "{WAYPOINT_CLASS}"'
        return WaypointBinding(waypoint=ref, reason="NotAWaypoint", message=message)
    if not _allows_namespace(view, gateway, from_namespace):
        message = f'we are not permitted to attach to waypoint "{_key(ref)}" (missing allowedRoutes?)'
        return WaypointBinding(waypoint=ref, reason="AttachmentDenied", message=message)
    return WaypointBinding(
        waypoint=ref,
        address=gateway_address(gateway),
        reason="WaypointAccepted",
        message=f"bound to {_key(ref)}",
    )


def gateway_address(gateway: Json) -> wl.GatewayAddress | None:
    """The GatewayAddress of a ready waypoint: its first IP address in `status.addresses` (type
    IPAddress, the Gateway API default), else its first hostname; port 15008 either way."""
    addresses = (gateway.get("status") or {}).get("addresses") or []
    for address in addresses:
        raw = ip_bytes(address.get("value", "")) if address.get("type", "IPAddress") == "IPAddress" else None
        if raw is not None:
            return wl.GatewayAddress(address=wl.NetworkAddress(address=raw), hbone_mtls_port=HBONE_MTLS_PORT)
    namespace = (gateway.get("metadata") or {}).get("namespace", "")
    for address in addresses:
        if address.get("type") == "Hostname" and address.get("value"):
            hostname = wl.NamespacedHostname(namespace=namespace, hostname=address["value"])
            return wl.GatewayAddress(hostname=hostname, hbone_mtls_port=HBONE_MTLS_PORT)
    return None


def _allows_namespace(view: ConfigView, gateway: Json, namespace: str) -> bool:
    """Whether the HBONE listener's allowedRoutes admit objects of `namespace` (makeAllowedRoutes)."""
    gateway_ns = (gateway.get("metadata") or {}).get("namespace", "")
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    hbone = next((li for li in listeners if li.get("protocol") == "HBONE" and li.get("port") == 15008), None)
    routes = ((hbone or {}).get("allowedRoutes") or {}).get("namespaces") or {}
    origin = routes.get("from") or "Same"
    if origin == "All":
        return True
    if origin == "Selector":
        ns = view.get(NAMESPACES, "", namespace)
        try:
            return label_selector_from_object(routes.get("selector") or {}).matches(labels_of(ns) if ns else {})
        except SelectorError:
            return False
    return gateway_ns == namespace


def _traffic_type(gateway: Json) -> str:
    # GatewayClass labels could also set it in Istio; GatewayClasses are not served here.
    return labels_of(gateway).get(WAYPOINT_FOR, SERVICE)


def _key(ref: tuple[str, str]) -> str:
    return f"{ref[0]}/{ref[1]}"
