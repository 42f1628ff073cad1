"""A pool of HBONE connections, as ztunnel keeps one per workload (istio-ambient-protocols §6,
"Pooling"; DESIGN §8).

A handshake costs about 5 ms of CPU on each side, while a pooled stream costs a fraction of
that: unpooled HBONE managed 167-193 new connections/s against 700-1000 streams/s pooled
(linux-dataplane-and-performance, Lessons 5). Streams to one key share a connection until it
carries `max_streams`; then another connection is opened. A connection left without streams is
closed after `idle_timeout` (ztunnel: 5 minutes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from h2.errors import ErrorCodes

from .driver import HboneClient
from .errors import ConnectionClosedError, StreamResetError
from .protocol import MAX_CONCURRENT_STREAMS
from .stream import HboneStream

DEFAULT_IDLE_TIMEOUT = 300.0


@dataclass(frozen=True)
class PoolKey:
    """What makes two streams able to share a connection: the same client certificate, the same
    identities the server must prove, the same server address."""

    source_identity: str
    destination_identities: frozenset[str]
    destination: tuple[str, int]


# Makes the connection for a key: picks the source's client context, opens the socket (inside
# the source pod's netns, with the mesh's mark) and calls HboneClient.connect.
Connector = Callable[[PoolKey], Awaitable[HboneClient]]


class _Entry:
    """One pooled connection, possibly still being made; `reserved` counts its streams."""

    __slots__ = ("client", "idle_timer", "key", "ready", "reserved")

    def __init__(self, key: PoolKey, ready: asyncio.Future[HboneClient]) -> None:
        self.key = key
        self.ready = ready
        self.client: HboneClient | None = None
        self.reserved = 0
        self.idle_timer: asyncio.TimerHandle | None = None

    def has_room(self, max_streams: int) -> bool:
        if self.client is None:
            return not self.ready.done() and self.reserved < max_streams
        return not self.client.closing and self.reserved < min(max_streams, self.client.stream_limit)


class Pool:
    """HBONE connections shared by key; every method runs on the event loop's thread."""

    def __init__(
        self,
        connect: Connector,
        *,
        max_streams: int = MAX_CONCURRENT_STREAMS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self._connect = connect
        self.max_streams = max_streams
        self.idle_timeout = idle_timeout
        self._entries: dict[PoolKey, list[_Entry]] = {}

    def connections(self, key: PoolKey | None = None) -> int:
        """Connections held (made or being made), for `key` or in all."""
        if key is not None:
            return len(self._entries.get(key, ()))
        return sum(len(entries) for entries in self._entries.values())

    async def open(self, key: PoolKey, authority: str, headers: Iterable[tuple[str, str]] = ()) -> HboneStream:
        """A CONNECT stream to `authority` over a pooled connection for `key`, opening a new
        connection when every one is full. Raises what HboneClient.connect / open raise.

        A stream the server never processed (its connection was going away: REFUSED_STREAM, or
        closed) is retried once on another connection, as RFC 9113 §8.7 allows.
        """
        headers = tuple(headers)
        try:
            return await self._open_once(key, authority, headers)
        except (StreamResetError, ConnectionClosedError) as e:
            if isinstance(e, StreamResetError) and e.error_code != ErrorCodes.REFUSED_STREAM:
                raise
            return await self._open_once(key, authority, headers)

    async def _open_once(self, key: PoolKey, authority: str, headers: tuple[tuple[str, str], ...]) -> HboneStream:
        entry = self._reserve(key)
        try:
            client = await asyncio.shield(entry.ready)
            stream = await client.open(authority, headers)
        except BaseException:
            self._release(entry)
            raise
        stream.add_close_callback(lambda _: self._release(entry))
        return stream

    def close(self) -> None:
        """Close every connection (GOAWAY: open streams may finish) and forget them."""
        for entries in list(self._entries.values()):
            for entry in list(entries):
                self._discard(entry)
                if entry.client is not None:
                    entry.client.close()

    def _reserve(self, key: PoolKey) -> _Entry:
        entries = self._entries.setdefault(key, [])
        entry = next((e for e in entries if e.has_room(self.max_streams)), None)
        if entry is None:
            entry = _Entry(key, asyncio.ensure_future(self._make(key)))
            entry.ready.add_done_callback(lambda fut, entry=entry: self._made(entry, fut))
            entries.append(entry)
        entry.reserved += 1
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
            entry.idle_timer = None
        return entry

    async def _make(self, key: PoolKey) -> HboneClient:
        return await self._connect(key)

    def _made(self, entry: _Entry, fut: asyncio.Future[HboneClient]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._discard(entry)  # every waiter gets the error; the next open tries afresh
            return
        entry.client = fut.result()
        entry.client.add_close_callback(lambda _: self._discard(entry))

    def _release(self, entry: _Entry) -> None:
        entry.reserved -= 1
        if entry.reserved == 0 and entry.client is not None and not entry.client.closing:
            loop = asyncio.get_running_loop()
            entry.idle_timer = loop.call_later(self.idle_timeout, self._expire, entry)

    def _expire(self, entry: _Entry) -> None:
        entry.idle_timer = None
        if entry.reserved == 0 and entry.client is not None:
            self._discard(entry)
            entry.client.close()

    def _discard(self, entry: _Entry) -> None:
        entries = self._entries.get(entry.key)
        if entries is not None and entry in entries:
            entries.remove(entry)
            if not entries:
                del self._entries[entry.key]
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
            entry.idle_timer = None
