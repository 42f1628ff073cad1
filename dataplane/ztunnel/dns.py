"""The node's name server: service names to their VIPs, for every pod of the node.

Kubernetes gives each pod a resolv.conf naming the cluster DNS; here mesh-runtime names its pod's
gateway (the node's side of the pod network) with the search list `NS.svc.cluster.local
svc.cluster.local cluster.local` and `ndots:5`, and ztunnel, which holds every Service and
ServiceEntry from xDS, answers on that address, port 53, UDP and TCP (docs/ztunnel.md, "Names"):

- a service's hostname (`web-api.default.svc.cluster.local`, a ServiceEntry's `api.example.com`):
  its IPv4 VIPs as A records (a service without VIPs: its workloads' addresses); NOERROR without
  records for any other type (AAAA: no IPv6 here), so resolvers do not wait for it;
- any other name in the cluster domain: NXDOMAIN, with authority;
- anything else: relayed as is to the node's own name servers (/etc/resolv.conf), SERVFAIL when
  none answers.

It serves enrolled and unenrolled pods alike: UDP from a pod is not captured by the in-pod rules,
and DNS over TCP from an enrolled pod leaves through ztunnel's 15001 as plain TCP to a destination
outside the mesh. Istio's ztunnel proxies DNS inside each pod (15053) beside kube-dns; without a
kube-dns here, one node-local server does both parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from mesh.names import CLUSTER_DOMAIN

from .dns_message import CLASS_IN, TYPE_A, MessageError, Question, Rcode, error, parse_query, response
from .state.store import StateStore

log = logging.getLogger("ztunnel.dns")
DNS_PORT = 53
UPSTREAM_TIMEOUT = 2.0
MAX_IN_FLIGHT = 256  # queries answered at once; more are dropped (the client retries)
TCP_IDLE = 10.0
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux's value; Python 3.11 does not name it


def upstreams_from(resolv_conf: Path, skip: str = "") -> tuple[str, ...]:
    """The IPv4 `nameserver`s of a resolv.conf (not `skip`, this server's own address)."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return ()
    servers = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and fields[1] != skip:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(fields[1]).version == 4:
                    servers.append(fields[1])
    return tuple(servers)


class Resolver:
    """What to answer to one query (the pure part is `local`; `answer` may relay upstream)."""

    def __init__(
        self,
        store: StateStore,
        domain: str = CLUSTER_DOMAIN,
        upstreams: tuple[str, ...] = (),
        synced: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._domain = domain.lower().strip(".")
        self._upstreams = upstreams
        self._synced = synced  # before the first xDS answer no name can be said not to exist

    def addresses(self, name: str) -> tuple[ipaddress.IPv4Address, ...] | None:
        """The IPv4 addresses of a service named `name`, or None when no service has the name."""
        services = self._store.services_by_hostname(name)
        if not services:
            return None
        vips = {vip.address for s in services for vip in s.vips if vip.address.version == 4}
        if not vips:  # headless: the addresses of its workloads
            for service in services:
                for port in service.ports:
                    for endpoint in self._store.endpoints(service, port):
                        vips.update(a for a in endpoint.workload.addresses if a.version == 4)
        return tuple(sorted(vips))

    def local(self, query: bytes, question: Question) -> bytes | None:
        """The answer this server gives itself, or None when the name is someone else's."""
        if question.qclass != CLASS_IN:
            return response(query, question, Rcode.NOTIMP)
        found = self.addresses(question.name)
        if found is not None:
            return response(query, question, Rcode.NOERROR, found if question.qtype == TYPE_A else ())
        if question.name == self._domain or question.name.endswith("." + self._domain):
            rcode = Rcode.NXDOMAIN if self._synced() else Rcode.SERVFAIL  # SERVFAIL: ask again
            return response(query, question, rcode, authoritative=rcode is Rcode.NXDOMAIN)
        return None

    async def answer(self, query: bytes) -> bytes | None:
        """The bytes to send back (None: nothing, for what is no query)."""
        try:
            question = parse_query(query)
        except MessageError as e:
            return error(query, e.rcode)
        own = self.local(query, question)
        if own is not None:
            return own
        for server in self._upstreams:
            relayed = await _relay(query, server)
            if relayed is not None:
                return relayed
        return response(query, question, Rcode.SERVFAIL, authoritative=False)


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, ident: bytes, done: asyncio.Future[bytes]) -> None:
        self._ident, self._done = ident, done

    def datagram_received(self, data: bytes, _addr: tuple) -> None:
        if data[:2] == self._ident and not self._done.done():
            self._done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self._done.done():
            self._done.set_exception(exc)


async def _relay(query: bytes, server: str) -> bytes | None:
    """`query` to `server`:53 over UDP and its answer, or None (unreachable, refused, silent)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    try:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Reply(query[:2], done), remote_addr=(server, DNS_PORT)
        )
    except OSError as e:  # no route (a node without a way out), no such address
        log.debug("upstream %s unusable: %s", server, e)
        return None
    try:
        transport.sendto(query)
        return await asyncio.wait_for(done, UPSTREAM_TIMEOUT)
    except (OSError, TimeoutError) as e:
        log.debug("upstream %s did not answer: %s", server, e)
        return None
    finally:
        transport.close()


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._transport: asyncio.DatagramTransport | None = None
        self._in_flight: set[asyncio.Task] = set()
        self.closed = asyncio.get_running_loop().create_future()  # the socket is really gone

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, _exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            return
        task = asyncio.get_running_loop().create_task(self._reply(data, addr))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _reply(self, data: bytes, addr: tuple) -> None:
        answer = await self._resolver.answer(data)
        if answer is not None and self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(answer, addr)


async def _serve_tcp(resolver: Resolver, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """RFC 1035 §4.2.2: each message after its two-byte length, as many as the client sends."""
    try:
        while True:
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE))[0]
            query = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
            answer = await resolver.answer(query)
            if answer is None:
                break
            writer.write(struct.pack("!H", len(answer)) + answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


def _bound(kind: int, address: str, port: int) -> socket.socket:
    """A socket bound to `address` even before the address exists (IP_FREEBIND): the pods'
    gateway appears on the node's bridge with its first pod. SO_REUSEPORT, as on the in-pod
    listeners: a new ztunnel answers while the old one drains."""
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class NameServer:
    """UDP and TCP on `address`:`port`, answered by `resolver`."""

    def __init__(self, resolver: Resolver, address: str, port: int = DNS_PORT) -> None:
        self._resolver = resolver
        self.where = f"{address}:{port}"
        self._address, self._port = address, port
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_server: _UdpServer | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        udp = _bound(socket.SOCK_DGRAM, self._address, self._port)
        self._udp, self._udp_server = await loop.create_datagram_endpoint(lambda: _UdpServer(self._resolver), sock=udp)
        tcp = _bound(socket.SOCK_STREAM, self._address, self._port)
        self._tcp = await asyncio.start_server(lambda r, w: _serve_tcp(self._resolver, r, w), sock=tcp)
        log.info("answering names", extra={"address": self.where})

    async def close(self) -> None:
        """Stop answering; returns once both sockets are closed (a transport's close only schedules
        it, and a datagram meanwhile would land on a socket nobody reads any more)."""
        if self._udp is not None:
            self._udp.close()
            await self._udp_server.closed
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
