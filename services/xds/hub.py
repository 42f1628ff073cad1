"""The push side: the current table of each type, the connected streams, and their pumps.

`publish()` installs a new table for a type and tells every subscribed stream which names
changed. Each stream has one pump task: when woken, it computes, per type, what that client
lacks (protocol.Subscription) and queues one response; a type with an unacknowledged response
waits, so changes merge (a slow client gets one merged push, not a backlog).

State-of-the-world streams (stock gRPC clients) are `SotwConnection`s: the same tables, wake-ups
and out queue, with a sotw.TypeState per type and their own pump (`pump_sotw`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from . import sotw
from .peers import Peer
from .protocol import Request, Response, Subscription, Table, all_visible, is_empty
from .types import SHORT

log = logging.getLogger("mesh-xds.push")

FULL_RECOMPUTE_AFTER = 5000  # more changed names than this: recompute the client's whole view
# Whole tables in flight at once (sent, not yet acknowledged): a thousand ztunnels connecting
# together would otherwise each hold a copy of a 100k-Address response in gRPC's buffers.
WHOLE_SENDS_AT_ONCE = 16
Visibility = Callable[[Peer, str], Callable[[str], bool]]  # (peer, type) -> name -> visible?


def everything(_peer: Peer, _type_url: str) -> Callable[[str], bool]:
    return all_visible


@dataclass(frozen=True, slots=True)
class Presliced:
    """A response serialized ahead: a shared prefix (a whole table) and this stream's own suffix
    (its nonce). Joined only when gRPC serializes it: gRPC keeps each stream's last response
    object alive while waiting for the next, so the object queued must stay small."""

    prefix: bytes
    suffix: bytes

    def __len__(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def join(self) -> bytes:
        return self.prefix + self.suffix


@dataclass
class Connection:
    """One stream."""

    id: str
    peer: Peer
    node_id: str = ""
    connected_at: float = field(default_factory=time.time)
    subs: dict[str, Subscription] = field(default_factory=dict)
    changed: dict[str, set[str] | None] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Messages, or a Presliced response (a whole table: Hub._whole_message).
    out: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=1))
    bytes_sent: int = 0
    responses: int = 0
    whole_slots: set[str] = field(default_factory=set)  # types whose whole table is unacknowledged
    protocol: str = "delta"
    _nonces: Any = field(default_factory=lambda: itertools.count(1))

    def next_nonce(self) -> str:
        return f"{self.id}-{next(self._nonces)}"

    def note_changes(self, type_url: str, names: set[str] | None) -> None:
        if type_url not in self.subs:
            return
        held = self.changed.get(type_url, set())
        if names is None or held is None or len(held) + len(names) > FULL_RECOMPUTE_AFTER:
            self.changed[type_url] = None
        else:
            self.changed[type_url] = held | names
        self.subs[type_url].dirty = True
        self.wake.set()


@dataclass
class SotwConnection(Connection):
    """A state-of-the-world stream: per type a sotw.TypeState instead of a delta Subscription
    (`note_changes` works unchanged on both: it marks the type dirty and records the names)."""

    subs: dict[str, sotw.TypeState] = field(default_factory=dict)  # type: ignore[assignment]
    protocol: str = "sotw"


class Hub:
    """Tables and streams; one instance per mesh-xds."""

    def __init__(self, visibility: Visibility = everything):
        self.tables: dict[str, Table] = {}
        self.connections: dict[str, Connection] = {}
        self.visibility = visibility
        self._whole: dict[str, tuple[Table, bytes]] = {}  # type -> a table and its whole response
        self._whole_sends = asyncio.Semaphore(WHOLE_SENDS_AT_ONCE)
        self._ids = itertools.count(1)
        self.on_nack: Callable[[Connection, str, str], None] | None = None

    def new_connection(self, peer: Peer, sotw_stream: bool = False) -> Connection:
        kind = SotwConnection if sotw_stream else Connection
        conn = kind(id=f"{peer.node or 'wl'}-{next(self._ids)}", peer=peer)
        self.connections[conn.id] = conn
        return conn

    def drop(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        for _ in conn.whole_slots:
            self._whole_sends.release()
        conn.whole_slots.clear()

    def publish(self, type_url: str, table: Table, changed: set[str] | None) -> None:
        """Install `table` and wake the streams that subscribe to the type."""
        self.tables[type_url] = table
        if changed is not None and not changed:
            return
        for conn in self.connections.values():
            conn.note_changes(type_url, changed)

    def resubscribe_all(self, type_url: str) -> None:
        """Visibility changed for everyone (e.g. pods moved between nodes): recompute fully."""
        for conn in self.connections.values():
            conn.note_changes(type_url, None)

    def on_request(self, conn: Connection, type_url: str, request: Request) -> None:
        first = type_url not in conn.subs
        sub = conn.subs.setdefault(type_url, Subscription())
        outcome = sub.on_request(request, first)
        if outcome in ("ack", "nack") and type_url in conn.whole_slots:
            conn.whole_slots.discard(type_url)
            self._whole_sends.release()
        if outcome == "nack":
            self._nacked(conn, type_url, request.error)
        if first:
            conn.changed[type_url] = None
        if sub.ready():
            conn.wake.set()

    def _nacked(self, conn: Connection, type_url: str, error: str | None) -> None:
        log.warning(
            "NACK",
            extra={"stream": conn.id, "peer": conn.peer.describe(), "type": SHORT.get(type_url), "error": error},
        )
        if self.on_nack is not None:
            self.on_nack(conn, type_url, error or "")

    def on_sotw_request(self, conn: SotwConnection, type_url: str, request: sotw.Request) -> None:
        """Fold a state-of-the-world request into its type's state; wake the pump if due."""
        state = conn.subs.setdefault(type_url, sotw.TypeState(type_url))
        if state.on_request(request) == "nack":
            self._nacked(conn, type_url, request.error)
        if state.ready():
            conn.wake.set()

    async def pump_sotw(self, conn: SotwConnection) -> None:
        """Send each type's full response when what the stream would get changed, one
        unacknowledged response per type at a time (sotw.py has the rules)."""
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            for type_url, state in list(conn.subs.items()):
                table = self.tables.get(type_url)
                if not state.ready() or table is None:
                    continue  # a type not generated yet is answered once its first table is published
                changed = conn.changed.pop(type_url, None)
                response = state.compute(table, self.visibility(conn.peer, type_url), changed)
                if response is None:
                    state.settle(table.version)
                    continue
                nonce = conn.next_nonce()
                state.sent(response, nonce, table.version)
                message = sotw.to_message(type_url, nonce, response)
                conn.bytes_sent += message.ByteSize()
                conn.responses += 1
                await conn.out.put(message)

    async def pump(self, conn: Connection) -> None:
        """Send what each subscribed type lacks, one unacknowledged response per type at a time."""
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            for type_url, sub in list(conn.subs.items()):
                if not sub.ready():
                    continue
                table = self.tables.get(type_url)
                if table is None:
                    continue  # not generated yet: answered once the first table is published
                changed = None if sub.must_answer else conn.changed.get(type_url)
                conn.changed.pop(type_url, None)
                visible = self.visibility(conn.peer, type_url)
                if changed is None and sub.takes_whole(table, visible):
                    await self._whole_sends.acquire()  # released by the ACK or NACK, or on drop
                    table = self.tables[type_url]  # the newest, after the wait
                    if sub.takes_whole(table, visible):  # still (requests may have come meanwhile)
                        conn.whole_slots.add(type_url)
                        nonce = conn.next_nonce()
                        sub.sent_whole(table, nonce)
                        data = Presliced(self._whole_message(type_url, table), _nonce_field(nonce))
                        conn.bytes_sent += len(data)
                        conn.responses += 1
                        await conn.out.put(data)
                        continue
                    self._whole_sends.release()
                response = sub.compute(table, visible, changed)
                if is_empty(response) and not sub.must_answer:
                    sub.settle(table.version)
                    continue
                nonce = conn.next_nonce()
                sub.sent(response, nonce, table.version)
                message = to_message(type_url, table.version, nonce, response)
                conn.bytes_sent += message.ByteSize()
                conn.responses += 1
                await conn.out.put(message)

    def _whole_message(self, type_url: str, table: Table) -> bytes:
        """A DeltaDiscoveryResponse carrying the whole table, without a nonce, serialized once per
        table: the initial sync of every wildcard stream that sees everything (a thousand
        ztunnels fetching 100k Addresses) costs a copy each, not a translation and encoding each."""
        cached = self._whole.get(type_url)
        if cached is not None and cached[0] is table:
            return cached[1]
        everything = Response(tuple(table.resources[n] for n in sorted(table.resources)), (), {})
        data = to_message(type_url, table.version, "", everything).SerializeToString()
        self._whole[type_url] = (table, data)
        return data


def _nonce_field(nonce: str) -> bytes:
    """`nonce` as an encoded DeltaDiscoveryResponse field: appended to a serialized response it
    sets the nonce (a protobuf message is the concatenation of its fields)."""
    return discovery_pb2.DeltaDiscoveryResponse(nonce=nonce).SerializeToString()


def to_message(type_url: str, version: int, nonce: str, response: Response) -> discovery_pb2.DeltaDiscoveryResponse:
    resources = [
        discovery_pb2.Resource(
            name=r.name, version=r.version, resource=r.body, aliases=response.aliases.get(r.name, ())
        )
        for r in response.resources
    ]
    return discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=str(version),
        type_url=type_url,
        nonce=nonce,
        resources=resources,
        removed_resources=list(response.removed),
    )


def from_message(request: discovery_pb2.DeltaDiscoveryRequest) -> Request:
    error = request.error_detail.message if request.HasField("error_detail") else None
    if error is not None and not error:
        error = f"code {request.error_detail.code}"
    return Request(
        subscribe=tuple(request.resource_names_subscribe),
        unsubscribe=tuple(request.resource_names_unsubscribe),
        initial_versions=dict(request.initial_resource_versions),
        nonce=request.response_nonce,
        error=error,
    )
