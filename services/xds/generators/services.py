"""Service resources: Kubernetes Services and the hosts of ServiceEntries.

Follows istio/istio: pilot/pkg/serviceregistry/ambient/services.go (constructService,
constructServiceEntries). Each function returns the message together with its waypoint binding, so
the caller can both push the one and report the other.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from mesh.proto_gen.istio.workload import workload_pb2 as wl
from services.xds.model import NAMESPACES

from .resources import ip_bytes, service_hostname
from .view import ConfigView, labels_of, meta
from .waypoints import NOT_REQUESTED, WaypointBinding, service_waypoint

Json = dict[str, Any]

INGRESS_USE_WAYPOINT = "istio.io/ingress-use-waypoint"

# Application protocols ztunnel distinguishes, by appProtocol value, port name prefix
# (`http-web`) or ServiceEntry protocol; anything else is UNKNOWN (istio/istio: kube.ConvertProtocol).
_APP_PROTOCOLS = {
    "http": wl.HTTP11,
    "http2": wl.HTTP2,
    "kubernetes.io/h2c": wl.HTTP2,
    "grpc": wl.GRPC,
    "tcp": wl.TCP,
    "tls": wl.TLS,
}


@dataclass(frozen=True)
class ServiceResult:
    """A translated Service and how its waypoint binding went."""

    service: wl.Service
    binding: WaypointBinding = NOT_REQUESTED


def app_protocol(name: str | None) -> int:
    """The AppProtocol for a protocol name (case-insensitive); UNKNOWN when ztunnel has no use for it."""
    return _APP_PROTOCOLS.get((name or "").lower(), wl.UNKNOWN)


def service_port_protocol(port: Json) -> int:
    """A Service port's protocol: `appProtocol`, else the port name's prefix before '-'; UDP and
    SCTP ports are never HTTP."""
    if port.get("appProtocol"):
        return app_protocol(port["appProtocol"])
    if (port.get("protocol") or "TCP") != "TCP":
        return wl.UNKNOWN
    return app_protocol((port.get("name") or "").split("-", 1)[0])


def _cluster_ips(spec: Json) -> list[str]:
    ips = spec.get("clusterIPs") or [spec.get("clusterIP") or ""]
    return [ip for ip in ips if ip and ip != "None"]


def _load_balancing(spec: Json) -> wl.LoadBalancing | None:
    """internalTrafficPolicy Local pins to the node; trafficDistribution prefers near endpoints;
    publishNotReadyAddresses lets unhealthy endpoints serve (constructService)."""
    lb: wl.LoadBalancing | None = None
    scopes = wl.LoadBalancing.Scope
    if spec.get("internalTrafficPolicy") == "Local":
        lb = wl.LoadBalancing(routing_preference=[scopes.Value("NODE")], mode=wl.LoadBalancing.STRICT)
    elif spec.get("trafficDistribution") in ("PreferClose", "PreferSameZone"):
        prefs = [scopes.Value(s) for s in ("NETWORK", "REGION", "ZONE")]
        lb = wl.LoadBalancing(routing_preference=prefs, mode=wl.LoadBalancing.FAILOVER)
    elif spec.get("trafficDistribution") == "PreferSameNode":
        prefs = [scopes.Value(s) for s in ("NETWORK", "REGION", "ZONE", "SUBZONE", "NODE")]
        lb = wl.LoadBalancing(routing_preference=prefs, mode=wl.LoadBalancing.FAILOVER)
    if spec.get("publishNotReadyAddresses"):
        lb = lb or wl.LoadBalancing()
        lb.health_policy = wl.LoadBalancing.ALLOW_ALL
    return lb


def _ip_families(spec: Json) -> int:
    families = spec.get("ipFamilies") or []
    if len(families) == 2:
        return wl.DUAL
    if len(families) == 1:
        return wl.IPV4_ONLY if families[0] == "IPv4" else wl.IPV6_ONLY
    return wl.AUTOMATIC


def _ingress_use_waypoint(view: ConfigView, obj: Json) -> bool:
    """`istio.io/ingress-use-waypoint` on the object, else on its namespace, parsed like Go's
    strconv.ParseBool (ingressUseWaypointFromLabels)."""
    value = labels_of(obj).get(INGRESS_USE_WAYPOINT)
    if value is None:
        ns = view.get(NAMESPACES, "", meta(obj).get("namespace", ""))
        value = labels_of(ns).get(INGRESS_USE_WAYPOINT) if ns else None
    return value in ("1", "t", "T", "true", "TRUE", "True")


def service_resource(view: ConfigView, svc: Json) -> ServiceResult | None:
    """The Service resource of a Kubernetes Service; None for ExternalName, which ambient does
    not implement (Istio builds no ServiceInfo for it: DNS answers it, ztunnel sees the target)."""
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    name, namespace = meta(svc)["name"], meta(svc).get("namespace", "")
    ports = [
        wl.Port(
            service_port=p["port"],
            # A named targetPort is resolved per workload (Workload.services), so 0 here.
            target_port=p["targetPort"] if isinstance(p.get("targetPort"), int) else 0,
            app_protocol=service_port_protocol(p),
        )
        for p in spec.get("ports") or []
    ]
    binding = service_waypoint(view, svc)
    service = wl.Service(
        name=name,
        namespace=namespace,
        hostname=service_hostname(name, namespace),
        addresses=[wl.NetworkAddress(address=raw) for ip in _cluster_ips(spec) if (raw := ip_bytes(ip))],
        ports=ports,
        waypoint=binding.address,
        load_balancing=_load_balancing(spec),
        ip_families=_ip_families(spec),
        # A Kubernetes Service is always canonical for its hostname (constructService).
        canonical=True,
        ingress_use_waypoint=binding.bound and _ingress_use_waypoint(view, svc),
    )
    return ServiceResult(service, binding)


def _network_address(text: str) -> wl.NetworkAddress | None:
    """A ServiceEntry address: an IP, or a CIDR block whose length is kept (toNetworkAddressFromCidr)."""
    try:
        if "/" in text:
            net = ipaddress.ip_interface(text)
            return wl.NetworkAddress(address=net.ip.packed, length=net.network.prefixlen)
        return wl.NetworkAddress(address=ipaddress.ip_address(text).packed)
    except ValueError:
        return None


def service_entry_ports(spec: Json) -> list[wl.Port]:
    """A ServiceEntry's ports: targetPort defaults to the port number."""
    return [
        wl.Port(
            service_port=p["number"],
            target_port=p.get("targetPort") or p["number"],
            app_protocol=app_protocol(p.get("protocol")),
        )
        for p in spec.get("ports") or []
    ]


def service_entry_services(view: ConfigView, se: Json) -> list[ServiceResult]:
    """One Service per host of a ServiceEntry, named `{ns}/{host}`, sharing its addresses and ports."""
    spec = se.get("spec") or {}
    name, namespace = meta(se)["name"], meta(se).get("namespace", "")
    addresses = [a for text in spec.get("addresses") or [] if (a := _network_address(text))]
    lb = None
    if (spec.get("resolution") or "NONE") == "NONE":
        # Traffic goes to the address the client asked for (constructServiceEntries).
        lb = wl.LoadBalancing(mode=wl.LoadBalancing.PASSTHROUGH, health_policy=wl.LoadBalancing.ALLOW_ALL)
    binding = service_waypoint(view, se)
    ingress = binding.bound and _ingress_use_waypoint(view, se)
    results, seen = [], set()
    for host in spec.get("hosts") or []:
        if host in seen:
            continue
        seen.add(host)
        service = wl.Service(
            name=name,
            namespace=namespace,
            hostname=host,
            addresses=addresses,
            ports=service_entry_ports(spec),
            subject_alt_names=spec.get("subjectAltNames") or [],
            waypoint=binding.address,
            load_balancing=lb,
            ingress_use_waypoint=ingress,
        )
        results.append(ServiceResult(service, binding))
    return results
