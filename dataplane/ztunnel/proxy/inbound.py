"""Inbound: 15008 (HBONE, mutual TLS) and 15006 (plaintext) inside the destination pod.

15008 (reference §6, "Inbound on 15008"): the TLS context is the pod's own workload certificate
(one listener per pod, so the pod is known before the handshake); the client's chain is verified
against the trust bundle by the HBONE server. Each CONNECT is answered per ztunnel:
- 400: the authority is not `ip:port`, or its IP is not the connection's destination (this pod);
- 401: the target has a waypoint and the peer is not it, or L4 authorization denies;
- 503: the application cannot be reached;
- 200: connected; bytes are spliced both ways with half-close and counted.
The upstream connection is made inside the pod's netns with the mark, bound to the client's IP
(IP_TRANSPARENT), so the application sees the real client; the node agent's in-pod routing rule
brings the replies back to ztunnel.

15006 (plaintext from outside the mesh): authorization without a peer identity, so STRICT
PeerAuthentication (the converted DENY `not_principals: [presence]`) refuses it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass

from mesh.hbone import HboneServer, HboneStream, parse_authority
from mesh.hbone.headers import AuthorityError
from mesh.identity import Identity, IdentityError

from .. import rbac
from ..identity import TlsContexts
from ..inpod import sockets
from ..inpod.pod import PodProxy
from ..metrics import Peers
from ..state import Service, StateStore, Workload
from ..state.outbound import ZTUNNEL_PORTS
from .connection import ConnectionRecord, Tracker
from .relay import relay_tracked, reset_socket
from .waypoints import from_waypoint

log = logging.getLogger("ztunnel.inbound")


@dataclass(frozen=True)
class Refusal:
    """Why a CONNECT is refused: the HTTP status, the response flag, and the reason (for logs)."""

    status: int
    flag: str
    reason: str


def check_target(authority: str, local_ip: str, workload: Workload | None) -> tuple[str, int] | Refusal:
    """The `(ip, port)` to connect to, or why not (400): the authority must be `ip:port` naming
    the connection's own destination IP, a workload ztunnel knows (istio/ztunnel inbound.rs)."""
    try:
        host, port = parse_authority(authority)
        target = ipaddress.ip_address(host)
    except (AuthorityError, ValueError) as e:
        return Refusal(400, "-", f"bad authority {authority!r}: {e}")
    if str(target) != local_ip:
        return Refusal(400, "-", f"authority {authority} does not match the destination {local_ip}")
    if workload is None or target not in workload.addresses:
        return Refusal(400, "-", f"no workload is known at {local_ip}")
    if port in ZTUNNEL_PORTS:
        return Refusal(400, "-", f"port {port} is ztunnel's own")
    return host, port


def _identity(text: str | None) -> Identity | None:
    try:
        return Identity.parse(text or "")
    except IdentityError:
        return None


class Inbound:
    """The inbound proxies (15008 and 15006) of every pod on the node."""

    def __init__(
        self,
        store: StateStore,
        contexts: TlsContexts,
        tracker: Tracker,
        upstream: sockets.UpstreamConnector,
        trust_domain: str,
        state_ready: asyncio.Event,
    ) -> None:
        self._state_ready = state_ready
        self._store = store
        self._contexts = contexts
        self._tracker = tracker
        self._upstream = upstream
        self._trust_domain = trust_domain

    def start(self, pod: PodProxy) -> None:
        """Listen on 15008 (HBONE) and 15006 (plaintext) in the pod.

        15008 is bound at once but accepted from only once the pod's certificate is at hand:
        meanwhile the kernel queues connections in the backlog instead of refusing them (after a
        ztunnel restart the first certificate takes a CA round trip)."""
        hbone = sockets.listener(pod.netns_fd, sockets.INBOUND_PORT)
        pod.hbone_socket = hbone
        plaintext = sockets.listener(pod.netns_fd, sockets.INBOUND_PLAINTEXT_PORT)
        server = HboneServer(
            lambda _address: self._contexts.server(pod.identity),
            lambda stream: self.handle_stream(pod, stream),
            trust_domain=self._trust_domain,
        )
        pod.hbone_server = server
        pod.spawn(self._serve_when_ready(pod, server, hbone))
        pod.accept_on(plaintext, self.handle_plaintext)

    async def _serve_when_ready(self, pod: PodProxy, server: HboneServer, sock: socket.socket) -> None:
        await self._contexts.wait_server(pod.identity)
        await self._state_ready.wait()
        if not pod.closed:
            await server.listen(sock=sock)

    def _record(
        self,
        pod: PodProxy,
        protocol: str,
        local: tuple[str, int],
        remote: tuple[str, int],
        peer: Identity | None,
        workload: Workload | None,
        port: int,
    ) -> ConnectionRecord:
        peers = Peers(
            reporter="destination",
            source=self._store.workload_by_ip(remote[0]),
            source_principal=str(peer) if peer is not None else None,
            destination=workload,
            destination_principal=str(pod.identity) if protocol == "HBONE" else None,
            service=self._service_of(workload, port),
            mtls=protocol == "HBONE",
        )
        return ConnectionRecord(
            pod_uid=pod.uid,
            workload=pod.name,
            direction="inbound",
            protocol=protocol,
            local=f"{local[0]}:{local[1]}",
            remote=f"{remote[0]}:{remote[1]}",
            target=f"{local[0]}:{port}",
            peers=peers,
        )

    def _service_of(self, workload: Workload | None, port: int) -> Service | None:
        """The service a connection to `port` most likely addressed (inbound cannot know; ztunnel
        guesses the same way): the first of the workload's services with that target port."""
        if workload is None:
            return None
        for key, ports in workload.services.items():
            service = self._store.service(key)
            if service is not None and any((t or service.ports.get(s)) == port for s, t in ports.items()):
                return service
        return None

    def _authorize(
        self, workload: Workload, peer: Identity | None, client_ip: str, target: tuple[str, int]
    ) -> tuple[Refusal | None, str]:
        """The waypoint rule, then L4 authorization: (the refusal or None, the reason)."""
        if workload.waypoint is not None and not from_waypoint(self._store, workload, peer, client_ip):
            why = f"{workload.uid} has a waypoint; {peer or 'the client'} is not it"
            return Refusal(401, "DENY", why), why
        decision = rbac.check(
            self._store,
            rbac.Connection(
                source_identity=peer,
                source_ip=ipaddress.ip_address(client_ip),
                destination_ip=ipaddress.ip_address(target[0]),
                destination_port=target[1],
                destination_workload=workload,
            ),
        )
        for shadow in decision.dry_run:
            log.info(
                "dry-run policy", extra={"policy": shadow.policy, "action": shadow.action, "matched": shadow.matched}
            )
        return (None if decision.allowed else Refusal(401, "DENY", decision.reason)), decision.reason

    def _admit(
        self,
        pod: PodProxy,
        protocol: str,
        authority: str,
        local: tuple[str, int],
        client: tuple[str, int],
        peer: Identity | None,
    ) -> tuple[ConnectionRecord, tuple[str, int] | Refusal]:
        """The connection's record, and where to connect or why not (400, 401)."""
        workload = pod.workload()
        target = check_target(authority, local[0], workload)
        port = local[1] if isinstance(target, Refusal) else target[1]
        record = self._record(pod, protocol, local, client, peer, workload, port)
        if isinstance(target, Refusal):
            return record, target
        assert workload is not None
        refusal, record.decision = self._authorize(workload, peer, client[0], target)
        return record, refusal or target

    async def handle_stream(self, pod: PodProxy, stream: HboneStream) -> None:
        """One CONNECT on 15008."""
        local, remote = stream.local_address, stream.peer_address
        assert local is not None and remote is not None
        peer = _identity(stream.peer_identity)
        record, target = self._admit(pod, "HBONE", stream.authority, local[:2], remote[:2], peer)
        if not isinstance(target, Refusal):
            try:
                upstream = await self._upstream.connect(pod.netns_fd, target, remote[0])
            except (OSError, TimeoutError) as e:
                target = Refusal(503, "CONNECT", f"cannot connect to {stream.authority}: {e}")
        if isinstance(target, Refusal):
            log.info("inbound refused", extra={"pod": pod.name, "status": target.status, "reason": target.reason})
            self._tracker.refused(record, target.reason, target.flag)
            stream.reject(target.status)
            return
        stream.accept()
        await self._tracker.start_tunnel(pod, record, stream, upstream, outbound=False)

    async def handle_plaintext(self, pod: PodProxy, conn: socket.socket) -> None:
        """One plaintext connection captured on 15006: allowed only where policy allows a
        connection without a peer identity."""
        try:
            dst = sockets.original_dst(conn)
            client = conn.getpeername()[:2]
        except OSError:
            conn.close()
            return
        await self._state_ready.wait()
        record, target = self._admit(pod, "TCP", f"{dst[0]}:{dst[1]}", dst, client, None)
        if isinstance(target, Refusal):
            log.info("plaintext refused", extra={"pod": pod.name, "reason": target.reason})
            self._tracker.refused(record, target.reason, target.flag)
            reset_socket(conn)
            return
        await relay_tracked(conn, self._upstream.connect(pod.netns_fd, target, client[0]), self._tracker, record)
