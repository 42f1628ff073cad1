"""Sockets inside a pod's network namespace (linux-dataplane-and-performance, "Socket techniques").

`setns` is held only around `socket()` (mesh.netns.entered): a socket keeps its namespace for
life, so bind, listen, accept and connect all happen from the node's namespace afterwards and one
event loop serves every pod. Every socket carries ztunnel's mark 0x539, which the in-pod rules
skip (so our own connections are not captured again); listeners set SO_REUSEPORT, so an old and a
new ztunnel both accept during a restart (reference §4).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

from mesh import netns

log = logging.getLogger("ztunnel.inpod")

ZTUNNEL_MARK = 0x539
SO_MARK = 36
SO_ORIGINAL_DST = 80
IP_TRANSPARENT = 19
OUTBOUND_PORT = 15001
INBOUND_PLAINTEXT_PORT = 15006
INBOUND_PORT = 15008
BACKLOG = 1024
CONNECT_TIMEOUT = 10.0


class TransparentRefused(OSError):
    """The kernel refused IP_TRANSPARENT or the bind to the client's address."""


def _new_socket(netns_fd: int, family: int) -> socket.socket:
    """A marked TCP socket in the pod's netns. TCP_NODELAY: a proxy forwards what it got at once
    (Nagle would hold a small write behind an unacknowledged one, e.g. two streams sharing a
    pooled HBONE connection); accepted sockets inherit it from their listener."""
    with netns.entered(netns_fd):
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, ZTUNNEL_MARK)
    except OSError:
        sock.close()
        raise
    return sock


def listener(netns_fd: int, port: int) -> socket.socket:
    """A listening socket on 0.0.0.0:`port` inside the pod's netns, marked, SO_REUSEPORT."""
    sock = _new_socket(netns_fd, socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def original_dst(conn: socket.socket) -> tuple[str, int]:
    """`SO_ORIGINAL_DST` of a REDIRECTed connection: a sockaddr_in, port in bytes 2-3 and the
    address in bytes 4-7."""
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    (port,) = struct.unpack("!H", raw[2:4])
    return socket.inet_ntoa(raw[4:8]), port


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


async def connect(netns_fd: int, address: tuple[str, int], *, source_ip: str | None = None) -> socket.socket:
    """A connected, non-blocking, marked socket from inside the pod's netns to `address`.

    With `source_ip` the socket binds to it with IP_TRANSPARENT first (the upstream side of
    inbound keeps the client's address; the node agent's in-pod routing rule brings the replies
    back); `TransparentRefused` if the kernel will not allow it.
    """
    sock = _new_socket(netns_fd, _family(address[0]))
    try:
        sock.setblocking(False)
        if source_ip is not None:
            try:
                sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                sock.bind((source_ip, 0))
            except OSError as e:
                raise TransparentRefused(e.errno, f"transparent bind to {source_ip}: {e.strerror}") from None
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, address), CONNECT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


class UpstreamConnector:
    """Connects to the application inside a pod keeping the client's source IP, falling back
    (once and for all, logged once) to the pod's own source when transparent binds are refused."""

    def __init__(self) -> None:
        self.transparent = True

    async def connect(self, netns_fd: int, address: tuple[str, int], client_ip: str) -> socket.socket:
        """A socket connected to `address` in the pod, from `client_ip` where the kernel allows."""
        if self.transparent and client_ip != address[0]:
            try:
                return await connect(netns_fd, address, source_ip=client_ip)
            except TransparentRefused as e:
                self.transparent = False
                log.warning(
                    "inbound: transparent source refused; upstream connections now use the pod's own address",
                    extra={"error": str(e)},
                )
        return await connect(netns_fd, address)
