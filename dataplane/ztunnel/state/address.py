"""Addresses as ztunnel holds them: an IP on a network, and the address of a waypoint or gateway.

Converted once from `istio.workload` messages (reference §2): raw 4- or 16-byte IPs become
`ipaddress` objects, and a GatewayAddress becomes either a network address or a service's
`namespace/hostname`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mesh.proto_gen.istio.workload import workload_pb2 as wl

from .convert import port
from .errors import ResourceError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The HBONE port (reference §6). A GatewayAddress is expected to carry it in `hbone_mtls_port`;
# istiod always sets it, and an unset (0) port is read as this default rather than as port 0.
HBONE_PORT = 15008


@dataclass(frozen=True, slots=True)
class NetworkAddress:
    """An IP address on a network; the empty network is the local one (reference §1 lookup keys)."""

    network: str
    address: IpAddress

    def __str__(self) -> str:
        return f"{self.network}/{self.address}"


@dataclass(frozen=True, slots=True)
class NamespacedHostname:
    """A service named by namespace and hostname; `key` is its xDS resource name."""

    namespace: str
    hostname: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.hostname}"


@dataclass(frozen=True, slots=True)
class GatewayAddress:
    """Where a waypoint or network gateway is reached: an IP (often a service VIP) or a service
    hostname, and the port it terminates HBONE on."""

    destination: NetworkAddress | NamespacedHostname
    hbone_mtls_port: int = HBONE_PORT


def ip_from_bytes(raw: bytes, where: str) -> IpAddress:
    """A raw 4- or 16-byte address (workload.proto keeps IPs as bytes), or ResourceError."""
    if len(raw) not in (4, 16):
        raise ResourceError(f"{where}: an IP address is 4 or 16 bytes, not {len(raw)}")
    return ipaddress.ip_address(raw)


def network_address_from_proto(message: wl.NetworkAddress, where: str) -> NetworkAddress:
    """A NetworkAddress message. Its optional `length` (a ServiceEntry CIDR) is not kept: ztunnel
    indexes service addresses by IP."""
    return NetworkAddress(message.network, ip_from_bytes(message.address, f"{where}.address"))


def gateway_from_proto(message: wl.GatewayAddress, where: str) -> GatewayAddress | None:
    """A GatewayAddress message; None when neither destination is set (no gateway)."""
    hbone_port = port(message.hbone_mtls_port, f"{where}.hbone_mtls_port") or HBONE_PORT
    kind = message.WhichOneof("destination")
    if kind == "address":
        return GatewayAddress(network_address_from_proto(message.address, f"{where}.address"), hbone_port)
    if kind == "hostname":
        if not message.hostname.hostname:
            raise ResourceError(f"{where}.hostname: the hostname is empty")
        hostname = NamespacedHostname(message.hostname.namespace, message.hostname.hostname)
        return GatewayAddress(hostname, hbone_port)
    return None


def socket_text(ip: IpAddress, port: int) -> str:
    """`ip:port`, with IPv6 in brackets: the form of an HBONE `:authority` (reference §6)."""
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
