"""Open connections: what `ztunnel-config connections` lists, what drain waits for, and where
each connection's metrics and access-log line come from.

A connection is `open`ed once its route is decided and `close`d exactly once with its byte
counts and outcome; the tracker counts the four TCP metrics and writes one structured line per
connection (identities, addresses, bytes, duration, decision), as ztunnel's access log does.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mesh.hbone import HboneStream, SpliceResult, start_splice

if TYPE_CHECKING:
    from ..inpod.pod import PodProxy

from ..metrics import Metrics, Peers, access_log, traffic_labels


@dataclass(eq=False, kw_only=True, slots=True)  # one per open connection: no __dict__
class ConnectionRecord:
    """One proxied connection. `local`/`remote` are the addresses of the captured socket as seen
    from the pod; `target` is where it goes (outbound) or the application address (inbound)."""

    pod_uid: str
    workload: str  # ns/name of the pod owning the listener
    direction: str  # "inbound" or "outbound"
    protocol: str  # "HBONE" or "TCP"
    local: str
    remote: str
    target: str
    peers: Peers
    hbone_target: str = ""
    decision: str = ""
    id: int = field(default_factory=itertools.count(1).__next__)
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, object]:
        """The connection as config_dump lists it."""
        return {
            "workload": self.workload,
            "direction": self.direction,
            "local": self.local,
            "remote": self.remote,
            "remoteTarget": self.target,
            "hboneTarget": self.hbone_target,
            "protocol": self.protocol,
            "sourcePrincipal": self.peers.source_principal or "",
            "destinationPrincipal": self.peers.destination_principal or "",
            "durationSeconds": round(time.monotonic() - self.started, 3),
        }


class Tracker:
    """Every open connection of this ztunnel (only touched from the event loop)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.open: dict[int, ConnectionRecord] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def opened(self, record: ConnectionRecord) -> None:
        """Count a connection whose route is decided and whose data may now flow."""
        self.open[record.id] = record
        self._idle.clear()
        self.metrics.connection_opened(traffic_labels(record.peers))

    def closed(self, record: ConnectionRecord, received: int, sent: int, error: str = "", flags: str = "-") -> None:
        """Count the close; `received` bytes came from the source, `sent` went back to it."""
        if self.open.pop(record.id, None) is None:
            return
        self.metrics.connection_closed(traffic_labels(record.peers, flags), received, sent)
        self._log(record, received, sent, error, flags)
        if not self.open:
            self._idle.set()

    async def start_tunnel(
        self, pod: PodProxy, record: ConnectionRecord, stream: HboneStream, sock: socket.socket, *, outbound: bool
    ) -> None:
        """Relay `stream` and `sock`, count the connection open, leave it to the pod's drain and
        account its end when it comes. Returns at once: the tunnel runs on callbacks, so no task
        is held while it is open (it may stay open for hours)."""
        tunnel = await start_splice(stream, sock)
        self.opened(record)
        pod.hold(tunnel, functools.partial(self._tunnel_closed, record, outbound))

    def _tunnel_closed(self, record: ConnectionRecord, outbound: bool, finished: asyncio.Future[SpliceResult]) -> None:
        """Count an HBONE tunnel's end (a done callback of its `Tunnel.finished`): outbound, the
        source's bytes went into the stream; inbound, they came out of it."""
        if finished.cancelled():
            self.closed(record, 0, 0, "cancelled", "CONNECT")
            return
        result = finished.result()
        received, sent = (result.to_stream, result.from_stream) if outbound else (result.from_stream, result.to_stream)
        error = f"{type(result.error).__name__}: {result.error}" if result.error else ""
        self.closed(record, received, sent, error, "CONNECT" if error else "-")

    def refused(self, record: ConnectionRecord, reason: str, flags: str) -> None:
        """A connection denied or failed before any data flowed: logged and counted as failed."""
        self.metrics.connection_failed(traffic_labels(record.peers, flags))
        record.decision = reason
        self._log(record, 0, 0, reason, flags)

    def _log(self, record: ConnectionRecord, received: int, sent: int, error: str, flags: str) -> None:
        p = record.peers
        access_log.info(
            "connection complete" if not error else "connection failed",
            extra={
                "direction": record.direction,
                "protocol": record.protocol,
                "workload": record.workload,
                "src.addr": record.remote,
                "src.identity": p.source_principal or "",
                "src.workload": p.source.name if p.source else "",
                "src.namespace": p.source.namespace if p.source else "",
                "dst.addr": record.target,
                "dst.hbone_addr": record.hbone_target,
                "dst.service": p.service.hostname if p.service else "",
                "dst.workload": p.destination.name if p.destination else "",
                "dst.namespace": p.destination.namespace if p.destination else "",
                "dst.identity": p.destination_principal or "",
                "bytes_recv": received,
                "bytes_sent": sent,
                "duration_ms": round((time.monotonic() - record.started) * 1000, 1),
                "decision": record.decision,
                "response_flags": flags,
                "error": error,
            },
        )

    def listing(self) -> list[dict[str, object]]:
        """Open connections, oldest first."""
        return [r.as_json() for r in sorted(self.open.values(), key=lambda r: r.id)]

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no connection is open, at most `timeout` seconds; True if none is left."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
