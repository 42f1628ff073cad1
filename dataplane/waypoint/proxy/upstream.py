"""Out of the waypoint: HBONE to `{pod IP}:15008`, or to the endpoint's `hbone_address` when it
has one (authority `{address}:{port}` either way, the waypoint's client certificate, the server's
SAN checked against the endpoint's `identity`) or plain TCP (tunnel `plaintext`), then HTTP/1.1
or HTTP/2 over it.

HBONE connections are shared through mesh/hbone's Pool (one TLS connection carries many CONNECT
streams). HTTP/1.1: each connection is one CONNECT stream, kept idle per endpoint for reuse, and
counted against the cluster's `max_connections`; a request that finds neither an idle connection
nor room for a new one waits as a pending request (`max_pending_requests`, beyond which it is an
overflow, 503 UO), as Envoy's HTTP/1.1 connection pool does. HTTP/2 (gRPC, and HTTP/2
downstreams): a new CONNECT stream per request carrying one HTTP/2 connection with one stream
(upstream_h2.py); its concurrency is bounded by `max_requests` alone (the caller's breaker).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from mesh.hbone import HboneClient, HboneError, Pool, PoolKey, format_authority

from ..identity import WaypointIdentity
from ..l7.upstreams import ClusterState, Endpoint, Resource
from . import http1
from .byte_stream import ByteStream, HboneBytes, StreamClosed, TcpBytes, next_http1_event
from .messages import HOP_BY_HOP, HttpRequest
from .upstream_h2 import exchange_h2
from .upstream_response import ConnectFailure, Overflow, RequestHead, UpstreamReset, UpstreamResponse

log = logging.getLogger("waypoint.upstream")
MAX_IDLE_PER_ENDPOINT = 64
HBONE_HANDSHAKE_TIMEOUT = 5.0  # the caller's connect_timeout bounds it further
MAX_PENDING_WAKEUPS = 10_000  # a pending request gives up after this many wake-ups without a connection
EndpointKey = tuple[str, int, str]  # l7.upstreams.Endpoint.key


class Connector:
    """Byte streams to endpoints over their tunnel."""

    def __init__(self, identity: WaypointIdentity, hbone_port: int) -> None:
        self._identity = identity
        self._hbone_port = hbone_port
        self.hbone = Pool(self._connect_hbone)

    async def _connect_hbone(self, key: PoolKey) -> HboneClient:
        context = await self._identity.client_context()
        return await HboneClient.connect(
            key.destination, context, expected_identities=key.destination_identities, timeout=HBONE_HANDSHAKE_TIMEOUT
        )

    async def open(self, endpoint: Endpoint, timeout: float) -> ByteStream:
        """A byte stream to the endpoint; ConnectFailure when it cannot be had within `timeout`."""
        try:
            if endpoint.tunnel == "hbone":
                identities = frozenset({endpoint.identity}) if endpoint.identity else frozenset()
                # docs/ingress.md, contract 3: dial `hbone_address` when the endpoint has one, else
                # `{address}:15008`; the authority is always `address:port`.
                destination = endpoint.hbone_address or (endpoint.address, self._hbone_port)
                key = PoolKey(str(self._identity.identity), identities, destination)
                stream = await asyncio.wait_for(
                    self.hbone.open(key, format_authority(endpoint.address, endpoint.port)), timeout
                )
                return HboneBytes(stream)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(endpoint.address, endpoint.port), timeout)
            return TcpBytes(reader, writer)
        except (HboneError, OSError, TimeoutError) as e:
            raise ConnectFailure(f"{endpoint.address}:{endpoint.port}: {e}") from None

    def close(self) -> None:
        self.hbone.close()


class _H1:
    """One HTTP/1.1 client connection over a byte stream, holding a `max_connections` unit."""

    __slots__ = ("key", "parser", "reusable", "state", "stream")

    def __init__(self, key: EndpointKey, stream: ByteStream, state: ClusterState) -> None:
        self.key = key
        self.stream = stream
        self.state = state
        self.parser = http1.Parser(responses=True)
        self.reusable = False  # set once a whole exchange left the connection open and idle

    async def next_event(self) -> http1.Event:
        """The next response event; StreamClosed when the bytes are not HTTP/1.1."""
        try:
            return await next_http1_event(self.parser, self.stream)
        except http1.ProtocolError as e:
            raise StreamClosed(f"invalid response: {e}") from None


def _body_at_hand(h1: _H1) -> tuple[list[bytes], bool]:
    """The body parts already parsed from bytes received (a content-length body that came with
    its head, as a small answer does), and whether it is complete. A complete body is handed on
    as bytes: one downstream write for head and body, no per-chunk generators, and the
    connection back in its pool at once."""
    parts: list[bytes] = []
    parser = h1.parser
    while True:
        event = parser.next_event()
        if type(event) is bytes:
            parts.append(event)
        elif event is http1.END:
            return parts, True
        else:  # NEED_DATA (CLOSED cannot come before END inside a message)
            return parts, False


def _over_limit(state: ClusterState) -> bool:
    breakers = state.breakers
    return breakers.in_use[Resource.CONNECTIONS] > breakers.limits[Resource.CONNECTIONS]


class _ClusterPool:
    """A cluster's idle HTTP/1.1 connections by endpoint and its pending requests."""

    def __init__(self) -> None:
        self.idle: dict[EndpointKey, list[_H1]] = {}
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close_idle_elsewhere(self, key: EndpointKey) -> bool:
        """Close an idle connection to another endpoint so its unit can serve this one."""
        for other, conns in self.idle.items():
            if other != key and conns:
                h1 = conns.pop()
                h1.stream.close()
                h1.state.breakers.release(Resource.CONNECTIONS)
                return True
        return False


class Upstreams:
    """Requests to endpoints (see the module docstring). One per process."""

    def __init__(self, identity: WaypointIdentity, hbone_port: int) -> None:
        self.connector = Connector(identity, hbone_port)
        self._pools: dict[str, _ClusterPool] = {}

    async def request(
        self, state: ClusterState, endpoint: Endpoint, request: HttpRequest, head: RequestHead, http2: bool
    ) -> UpstreamResponse:
        """Send the request and wait for the response head; ConnectFailure, UpstreamReset or
        Overflow when there is none."""
        if http2:
            stream = await self.connector.open(endpoint, state.connect_timeout)
            return await exchange_h2(stream, request, head.path, head.authority, head.headers)
        for _attempt in range(2):  # a reused keep-alive connection that turns out closed is replaced once
            h1, reused = await self._h1(state, endpoint)
            try:
                return await self._exchange(h1, request, head)
            except StreamClosed as e:
                self._discard(h1)
                if not reused:
                    raise UpstreamReset(f"{endpoint.address}:{endpoint.port}: {e}") from None
            except BaseException:
                self._discard(h1)
                raise
        raise UpstreamReset(f"{endpoint.address}:{endpoint.port}: connection closed")

    # --- the HTTP/1.1 connection pool ------------------------------------------------------------

    async def _h1(self, state: ClusterState, endpoint: Endpoint) -> tuple[_H1, bool]:
        pool = self._pools.setdefault(state.name, _ClusterPool())
        pending = False
        try:
            for _ in range(MAX_PENDING_WAKEUPS):
                idle = pool.idle.get(endpoint.key)
                if idle and _over_limit(state):
                    # The cluster's max_connections was lowered under connections already open
                    # (Envoy drains the old pool on a cluster change): close instead of reusing.
                    self._discard(idle.pop())
                    continue
                if idle:
                    return idle.pop(), True
                if state.breakers.try_acquire(Resource.CONNECTIONS):
                    try:
                        stream = await self.connector.open(endpoint, state.connect_timeout)
                    except BaseException:
                        state.breakers.release(Resource.CONNECTIONS)
                        pool.wake_one()
                        raise
                    return _H1(endpoint.key, stream, state), False
                if pool.close_idle_elsewhere(endpoint.key):
                    continue
                if not pending:
                    if not state.breakers.try_acquire(Resource.PENDING_REQUESTS):
                        raise Overflow("max_pending_requests")
                    pending = True
                waiter = asyncio.get_running_loop().create_future()
                pool.waiters.append(waiter)
                await waiter  # the caller's timeout bounds the wait
            raise Overflow("no connection became free")
        finally:
            if pending:
                state.breakers.release(Resource.PENDING_REQUESTS)

    def _release(self, h1: _H1) -> None:
        pool = self._pools.setdefault(h1.state.name, _ClusterPool())
        if h1.reusable and h1.parser.idle:
            idle = pool.idle.setdefault(h1.key, [])
            if len(idle) < MAX_IDLE_PER_ENDPOINT:
                idle.append(h1)
                pool.wake_one()
                return
        self._discard(h1)

    def _discard(self, h1: _H1) -> None:
        h1.stream.close()
        h1.state.breakers.release(Resource.CONNECTIONS)
        self._pools.setdefault(h1.state.name, _ClusterPool()).wake_one()

    async def _exchange(self, h1: _H1, request: HttpRequest, head: RequestHead) -> UpstreamResponse:
        out = [("host", head.authority)]
        out += [(k, v) for k, v in head.headers if k not in HOP_BY_HOP and k != "content-length"]
        if request.body or request.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            out.append(("content-length", str(len(request.body))))
        try:
            data = http1.request_head(request.method, head.path, out)
        except http1.HeadError as e:
            raise UpstreamReset(str(e)) from None
        await h1.stream.write(data + request.body if request.body else data)
        for _ in range(100):  # 1xx answers are skipped; more than 100 of them is not HTTP
            event = await h1.next_event()
            if isinstance(event, http1.ResponseHead):
                if event.status >= 200 or event.status == 101:
                    break
                if await h1.next_event() is not http1.END:  # a 1xx has no body
                    raise StreamClosed("a body after an informational response")
            elif event is http1.CLOSED:
                raise StreamClosed("closed before a response")
            else:
                raise StreamClosed(f"unexpected {event!r} before a response")
        else:
            raise StreamClosed("too many informational responses")
        if event.status == 101:
            raise StreamClosed("the upstream switched protocols, which was not asked for")
        length = next((int(v) for k, v in event.headers if k == "content-length" and v.isdigit()), None)
        kept = [(k, v) for k, v in event.headers if k not in HOP_BY_HOP and k != "content-length"]
        if request.method == "HEAD" or event.status in (204, 304):
            length = None
        response = UpstreamResponse(event.status, kept, None, length)  # type: ignore[arg-type]
        if request.method == "HEAD":
            # llhttp cannot be told the answer has no body (it would wait for content-length
            # bytes that never come): the answer is complete, the connection is not reused.
            response.body = b""
            self._discard(h1)
            return response
        h1.reusable = event.keep_alive
        parts, complete = _body_at_hand(h1) if length is not None else ([], False)
        if complete:
            response.body = b"".join(parts)
            self._release(h1)
        else:
            response.body = self._body(h1, parts)
        return response

    async def _body(self, h1: _H1, at_hand: list[bytes]):
        finished = False
        try:
            for part in at_hand:
                yield part
            while True:  # ends with END, or an error when the connection breaks
                event = await h1.next_event()
                if type(event) is bytes:
                    yield event
                elif event is http1.END:
                    finished = True
                    return
                else:
                    raise StreamClosed(f"unexpected {event!r} in a response body")
        finally:
            if finished:
                self._release(h1)
            else:
                self._discard(h1)

    def close(self) -> None:
        """Close every idle connection and the HBONE pool."""
        for pool in self._pools.values():
            for conns in pool.idle.values():
                for h1 in conns:
                    with contextlib.suppress(Exception):
                        h1.stream.close()
            pool.idle.clear()
        self.connector.close()
