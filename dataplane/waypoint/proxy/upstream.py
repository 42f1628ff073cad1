"""Out of the waypoint: HBONE to `{pod IP}:15008` (authority `{pod IP}:{port}`, the waypoint's
client certificate, the server's SAN checked against the endpoint's `identity`) or plain TCP
(tunnel `plaintext`), and HTTP/1.1 over it with keep-alive connections pooled per endpoint.

HBONE connections are shared through mesh/hbone's Pool (one TLS connection carries many CONNECT
streams); each HTTP/1.1 connection is one CONNECT stream, kept idle for reuse after a response
that leaves it reusable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11

from mesh.hbone import HboneClient, HboneError, Pool, PoolKey, format_authority

from ..config import Endpoint
from ..identity import WaypointIdentity
from .byte_stream import ByteStream, HboneBytes, StreamClosed, TcpBytes
from .messages import HOP_BY_HOP, HttpRequest

log = logging.getLogger("waypoint.upstream")
MAX_IDLE_PER_ENDPOINT = 64
CONNECT_TIMEOUT = 5.0


class ConnectFailure(Exception):
    """No connection to the endpoint (refused, TLS or identity failure, timeout): flag UF."""


class UpstreamReset(Exception):
    """The connection broke before a response arrived: flag UC / UR."""


@dataclass
class UpstreamResponse:
    """Status and headers of an upstream answer; `body` streams the rest (consume or `discard`)."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]
    length: int | None


class _H1:
    """One HTTP/1.1 client connection over a byte stream."""

    __slots__ = ("conn", "key", "stream")

    def __init__(self, key: tuple[str, int, str], stream: ByteStream) -> None:
        self.key = key
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def next_event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.read())


class Upstreams:
    """Connections to endpoints (see the module docstring). One per process."""

    def __init__(self, identity: WaypointIdentity, hbone_port: int) -> None:
        self._identity = identity
        self._hbone_port = hbone_port
        self.hbone = Pool(self._connect_hbone)
        self._idle: dict[tuple[str, int, str], list[_H1]] = {}

    async def _connect_hbone(self, key: PoolKey) -> HboneClient:
        context = await self._identity.client_context()
        return await HboneClient.connect(
            key.destination, context, expected_identities=key.destination_identities, timeout=CONNECT_TIMEOUT
        )

    async def open(self, endpoint: Endpoint) -> ByteStream:
        """A byte stream to the endpoint over its tunnel; ConnectFailure when it cannot be had."""
        try:
            if endpoint.tunnel == "hbone":
                identities = frozenset({endpoint.identity}) if endpoint.identity else frozenset()
                key = PoolKey(str(self._identity.identity), identities, (endpoint.ip, self._hbone_port))
                stream = await asyncio.wait_for(
                    self.hbone.open(key, format_authority(endpoint.ip, endpoint.port)), CONNECT_TIMEOUT
                )
                return HboneBytes(stream)
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(endpoint.ip, endpoint.port), CONNECT_TIMEOUT
            )
            return TcpBytes(reader, writer)
        except (HboneError, OSError, TimeoutError) as e:
            raise ConnectFailure(f"{endpoint.address}: {e}") from None

    async def _connection(self, endpoint: Endpoint) -> tuple[_H1, bool]:
        key = (endpoint.ip, endpoint.port, endpoint.tunnel)
        idle = self._idle.get(key)
        if idle:
            return idle.pop(), True
        return _H1(key, await self.open(endpoint)), False

    def _release(self, h1: _H1) -> None:
        if h1.conn.our_state is h11.DONE and h1.conn.their_state is h11.DONE:
            h1.conn.start_next_cycle()
            idle = self._idle.setdefault(h1.key, [])
            if len(idle) < MAX_IDLE_PER_ENDPOINT:
                idle.append(h1)
                return
        h1.stream.close()

    async def request(
        self, endpoint: Endpoint, request: HttpRequest, headers: list[tuple[str, str]]
    ) -> UpstreamResponse:
        """Send `request` (with `headers`, already modified) and wait for the response head.
        A reused keep-alive connection that turns out closed is replaced once."""
        for _attempt in range(2):
            h1, reused = await self._connection(endpoint)
            try:
                return await self._exchange(h1, request, headers)
            except (StreamClosed, h11.ProtocolError) as e:
                h1.stream.close()
                if not reused:
                    raise UpstreamReset(f"{endpoint.address}: {e}") from None
        raise UpstreamReset(f"{endpoint.address}: connection closed")

    async def _exchange(self, h1: _H1, request: HttpRequest, headers: list[tuple[str, str]]) -> UpstreamResponse:
        out = [("host", request.authority)]
        out += [(k, v) for k, v in headers if k not in HOP_BY_HOP and k != "content-length"]
        if request.body or request.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            out.append(("content-length", str(len(request.body))))
        data = h1.conn.send(h11.Request(method=request.method, target=request.target, headers=out))
        if request.body:
            data += h1.conn.send(h11.Data(data=request.body))
        data += h1.conn.send(h11.EndOfMessage())
        await h1.stream.write(data)
        while True:
            event = await h1.next_event()
            if isinstance(event, h11.Response):
                break
            if isinstance(event, h11.ConnectionClosed):
                raise StreamClosed("closed before a response")
            # an InformationalResponse (1xx) is skipped
        response_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
        length = next((int(v) for k, v in response_headers if k == "content-length" and v.isdigit()), None)
        kept = [(k, v) for k, v in response_headers if k not in HOP_BY_HOP and k != "content-length"]
        if request.method == "HEAD" or event.status_code in (204, 304):
            length = None
        return UpstreamResponse(event.status_code, kept, self._body(h1), length)

    async def _body(self, h1: _H1) -> AsyncIterator[bytes]:
        finished = False
        try:
            while True:
                event = await h1.next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    finished = True
                    return
                else:
                    raise StreamClosed(f"unexpected {type(event).__name__} in a response body")
        finally:
            if finished:
                self._release(h1)
            else:
                h1.stream.close()

    def close(self) -> None:
        """Close every idle connection and the HBONE pool."""
        for idle in self._idle.values():
            for h1 in idle:
                h1.stream.close()
        self._idle.clear()
        self.hbone.close()


async def discard(body: AsyncIterator[bytes]) -> int:
    """Read and drop a response body (mirrors, retried attempts); its size."""
    size = 0
    async for chunk in body:
        size += len(chunk)
    return size
