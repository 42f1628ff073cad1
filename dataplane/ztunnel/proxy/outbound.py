"""Outbound (15001 inside the source pod): every TCP connection the pod opens, captured by the
in-pod REDIRECT rule (reference §5), proxied per `state.outbound.decide` (reference §6):

- the original destination comes from SO_ORIGINAL_DST; the source is the pod owning the listener
  (unknown to xDS: deny);
- HBONE: a CONNECT stream through the pod's pool to `{ip}:15008` with `:authority` and the
  `forwarded`/`baggage` headers; the pool's connector opens the TCP socket inside the source pod's
  netns with the mark, and does TLS with the source identity's certificate, checking the server
  against the expected identities;
- TCP passthrough: a marked socket in the pod's netns straight to the destination;
- bytes spliced both ways with half-close, counted, and one access-log line at the end.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from mesh.certs.certificate import CertificateError
from mesh.hbone import HboneClient, HboneError, HboneStream, Pool, PoolKey

from ..identity import TlsContexts
from ..inpod import sockets
from ..inpod.pod import PodProxy
from ..metrics import Peers
from ..state import StateStore
from ..state.address import socket_text
from ..state.outbound import Decision, Route, decide
from .connection import ConnectionRecord, Tracker
from .headers import connect_headers
from .relay import relay_tracked, reset_socket

log = logging.getLogger("ztunnel.outbound")


def _text(address: tuple[str, int]) -> str:
    return f"[{address[0]}]:{address[1]}" if ":" in address[0] else f"{address[0]}:{address[1]}"


class Outbound:
    """The outbound proxy of every pod on the node."""

    def __init__(
        self, store: StateStore, contexts: TlsContexts, tracker: Tracker, cluster_id: str, state_ready: asyncio.Event
    ) -> None:
        self._state_ready = state_ready  # set once xDS answered: decisions before that would deny
        self._store = store
        self._contexts = contexts
        self._tracker = tracker
        self._cluster_id = cluster_id

    def start(self, pod: PodProxy) -> None:
        """Listen on 15001 in the pod and give it its HBONE pool."""
        pod.pool = Pool(lambda key: self._connect(pod, key))
        pod.accept_on(sockets.listener(pod.netns_fd, sockets.OUTBOUND_PORT), self.handle)

    async def _connect(self, pod: PodProxy, key: PoolKey) -> HboneClient:
        """The pool's connector: TLS as the pod's identity, from a socket in the pod's netns."""
        context = await self._contexts.client(pod.identity)
        sock = await sockets.connect(pod.netns_fd, key.destination)
        return await HboneClient.connect(None, context, sock=sock, expected_identities=key.destination_identities)

    async def handle(self, pod: PodProxy, conn: socket.socket) -> None:
        """One captured connection, from decision to close."""
        try:
            dst_ip, dst_port = sockets.original_dst(conn)
            client = conn.getpeername()[:2]
        except OSError:
            conn.close()  # not REDIRECTed (someone dialled 15001 itself) or already gone
            return
        await self._state_ready.wait()
        source = pod.workload()
        decision = decide(self._store, source, dst_ip, dst_port)
        record = self._record(pod, decision, client, (dst_ip, dst_port))
        if decision.route is Route.DENY:
            log.info("outbound denied", extra={"pod": pod.name, "reason": decision.reason})
            self._tracker.refused(record, decision.reason, "DENY")
            reset_socket(conn)
        elif decision.route is Route.HBONE:
            stream = await self._open_hbone(pod, conn, decision, record, client)
            if stream is None:
                return
            await self._tracker.start_tunnel(pod, record, stream, conn, outbound=True)
        else:
            await self._passthrough(pod, conn, decision, record)

    def _record(
        self, pod: PodProxy, decision: Decision, client: tuple[str, int], original: tuple[str, int]
    ) -> ConnectionRecord:
        destination = decision.destination_workload
        hbone = decision.route is Route.HBONE
        peers = Peers(
            reporter="source",
            source=decision.source,
            source_principal=str(pod.identity),
            destination=destination,
            destination_principal=str(destination.identity) if destination is not None and hbone else None,
            service=decision.destination_service,
            mtls=hbone,
        )
        connect_to = decision.connect_to
        return ConnectionRecord(
            pod_uid=pod.uid,
            workload=pod.name,
            direction="outbound",
            protocol="HBONE" if hbone else "TCP",
            local=_text(original),
            remote=_text(client),
            target=decision.authority or (socket_text(*connect_to) if connect_to else _text(original)),
            hbone_target=socket_text(*connect_to) if hbone and connect_to else "",
            peers=peers,
            decision=decision.reason,
        )

    async def _open_hbone(
        self, pod: PodProxy, conn: socket.socket, decision: Decision, record: ConnectionRecord, client: tuple[str, int]
    ) -> HboneStream | None:
        """The tunnel's stream from the pod's pool; None (the client reset, the failure recorded)
        if it cannot be opened."""
        assert decision.source is not None and decision.connect_to is not None and decision.authority is not None
        assert pod.pool is not None
        ip, port = decision.connect_to
        key = PoolKey(str(pod.identity), frozenset(str(i) for i in decision.expected_identities), (str(ip), port))
        headers = connect_headers(decision.source, client, decision.destination_service, self._cluster_id)
        try:
            stream = await pod.pool.open(key, decision.authority, headers)
        except (HboneError, CertificateError, OSError, TimeoutError) as e:
            flag = getattr(e, "response_flag", "CONNECT")
            log.info("outbound HBONE failed", extra={"pod": pod.name, "to": record.hbone_target, "error": str(e)})
            self._tracker.refused(record, f"{type(e).__name__}: {e}", flag)
            reset_socket(conn)
            return None
        return stream

    async def _passthrough(
        self, pod: PodProxy, conn: socket.socket, decision: Decision, record: ConnectionRecord
    ) -> None:
        assert decision.connect_to is not None
        ip, port = decision.connect_to
        await relay_tracked(conn, sockets.connect(pod.netns_fd, (str(ip), port)), self._tracker, record)
