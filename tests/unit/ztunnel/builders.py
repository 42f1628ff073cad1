"""Protobuf builders for ztunnel state tests: the messages mesh-xds sends, with short defaults."""

from __future__ import annotations

import ipaddress

from google.protobuf import any_pb2, wrappers_pb2

from mesh.proto_gen.istio.security import authorization_pb2 as authz
from mesh.proto_gen.istio.workload import workload_pb2 as wl


def raw(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def pod_uid(namespace: str, name: str) -> str:
    return f"Kubernetes//Pod/{namespace}/{name}"


def workload(
    name: str,
    ips: list[str],
    namespace: str = "default",
    *,
    sa: str = "",
    node: str = "node-1",
    hbone: bool = True,
    services: dict[str, dict[int, int]] | None = None,
    policies: list[str] | None = None,
    healthy: bool = True,
    waypoint: wl.GatewayAddress | None = None,
    capacity: int | None = None,
    locality: tuple[str, str, str] | None = None,
    network: str = "",
) -> wl.Workload:
    message = wl.Workload(
        uid=pod_uid(namespace, name),
        name=name,
        namespace=namespace,
        addresses=[raw(ip) for ip in ips],
        service_account=sa,
        node=node,
        network=network,
        tunnel_protocol=wl.HBONE if hbone else wl.NONE,
        authorization_policies=policies or [],
        status=wl.HEALTHY if healthy else wl.UNHEALTHY,
        waypoint=waypoint,
        canonical_name=name,
        workload_name=name,
        capacity=wrappers_pb2.UInt32Value(value=capacity) if capacity is not None else None,
        locality=wl.Locality(region=locality[0], zone=locality[1], subzone=locality[2]) if locality else None,
    )
    for key, ports in (services or {}).items():
        message.services[key].ports.extend(wl.Port(service_port=s, target_port=t) for s, t in ports.items())
    return message


def service(
    name: str,
    vips: list[str],
    ports: dict[int, int],
    namespace: str = "default",
    *,
    waypoint: wl.GatewayAddress | None = None,
    sans: list[str] | None = None,
    lb: wl.LoadBalancing | None = None,
) -> wl.Service:
    return wl.Service(
        name=name,
        namespace=namespace,
        hostname=f"{name}.{namespace}.svc.cluster.local",
        addresses=[wl.NetworkAddress(address=raw(ip)) for ip in vips],
        ports=[wl.Port(service_port=s, target_port=t) for s, t in ports.items()],
        waypoint=waypoint,
        subject_alt_names=sans or [],
        load_balancing=lb,
    )


def svc_key(name: str, namespace: str = "default") -> str:
    return f"{namespace}/{name}.{namespace}.svc.cluster.local"


def gateway_ip(ip: str, port: int = 15008) -> wl.GatewayAddress:
    return wl.GatewayAddress(address=wl.NetworkAddress(address=raw(ip)), hbone_mtls_port=port)


def gateway_host(namespace: str, hostname: str, port: int = 15008) -> wl.GatewayAddress:
    return wl.GatewayAddress(
        hostname=wl.NamespacedHostname(namespace=namespace, hostname=hostname), hbone_mtls_port=port
    )


def packed(message: wl.Workload | wl.Service | authz.Authorization) -> any_pb2.Any:
    """As the xDS client holds it: an Address (or an Authorization) in an Any."""
    out = any_pb2.Any()
    if isinstance(message, wl.Workload):
        out.Pack(wl.Address(workload=message))
    elif isinstance(message, wl.Service):
        out.Pack(wl.Address(service=message))
    else:
        out.Pack(message)
    return out


def name_of(message: wl.Workload | wl.Service | authz.Authorization) -> str:
    if isinstance(message, wl.Workload):
        return message.uid
    if isinstance(message, wl.Service):
        return f"{message.namespace}/{message.hostname}"
    return f"{message.namespace}/{message.name}"


def resources(*messages) -> dict[str, any_pb2.Any]:
    return {name_of(m): packed(m) for m in messages}
