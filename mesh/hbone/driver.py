"""HBONE's asyncio driver: TLS connections around the sans-IO core (protocol.py).

`HboneClient` is one mTLS + HTTP/2 connection that opens CONNECT streams; `HboneServer` accepts
mTLS connections (certificate chosen per connection by destination address) and hands each
CONNECT request to a handler. Both are asyncio Protocols rather than streams: bytes go from the
transport's callback straight into the core with no task switch per read, which is what the
reference measurements were made with (linux-dataplane-and-performance, Performance) and works
unchanged under uvloop.

Per-stream back-pressure only: the transport is never paused for reading, because one backed-up
stream would then stall every stream of the connection (Lessons 4); a slow consumer simply
withholds its stream's WINDOW_UPDATE (see HboneStream.read).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable
from typing import Any

from h2.errors import ErrorCodes

from .errors import ConnectionClosedError, HboneError, StreamResetError, TlsError
from .link import Link
from .protocol import ClientConnection, ServerConnection
from .stream import HboneStream
from .tls import ContextSelector, check_alpn, check_client_identity, check_server_identity

log = logging.getLogger(__name__)

Handler = Callable[[HboneStream], Awaitable[None]]

_BACKLOG = 1024
_KEEPALIVE_SECONDS = 180
_KEEPALIVE_PROBES = 9


class HboneClient:
    """One mTLS + HTTP/2 connection to an HBONE server (ztunnel's 15008 or a waypoint).

    Use `connect`, then `open` streams (up to `available_streams` at once); `close` sends GOAWAY
    and lets open streams finish. `Pool` shares clients between connections to one destination.
    """

    def __init__(self, link: Link) -> None:
        self._link = link

    @classmethod
    async def connect(
        cls,
        address: tuple[str, int] | None,
        ssl_context: ssl.SSLContext,
        *,
        expected_identities: Collection[str] = (),
        sock: Any = None,
        timeout: float = 10.0,
    ) -> HboneClient:
        """Dial `address` (or use the connected `sock`, e.g. one opened inside a pod's netns with
        the mesh's socket mark), do the TLS handshake without SNI, check ALPN and the server's
        SPIFFE identity against `expected_identities`, then start HTTP/2.

        `TlsError` if the TCP connect or the handshake fails, `IdentityMismatch` on a wrong
        server identity (the connection is closed before any request is sent).
        """
        loop = asyncio.get_running_loop()
        link = Link(ClientConnection(), None)
        host, port = address if address is not None else (None, None)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: link,
                    host,
                    port,
                    ssl=ssl_context,
                    sock=sock,
                    server_hostname="",
                    ssl_handshake_timeout=timeout,
                ),
                timeout,
            )
        except (ssl.SSLError, ssl.CertificateError) as e:
            raise TlsError(f"TLS handshake with {address or 'peer'} failed: {e}") from None
        except (OSError, TimeoutError) as e:
            raise TlsError(f"cannot connect to {address or 'peer'}: {e}") from None
        assert link.transport is not None
        sock = link.transport.get_extra_info("socket")
        if sock is not None:
            set_keepalive(sock)
        ssl_object = link.transport.get_extra_info("ssl_object")
        try:
            check_alpn(ssl_object)
            identity = check_server_identity(ssl_object, expected_identities)
        except HboneError:
            link.abort()
            raise
        link.start(identity)
        return cls(link)

    @property
    def peer_identity(self) -> str | None:
        """The server's verified SPIFFE identity."""
        return self._link.peer_identity

    @property
    def available_streams(self) -> int:
        """How many more streams may be opened now."""
        link = self._link
        core = link.core
        assert isinstance(core, ClientConnection)
        return 0 if link.going_away or link.lost.done() else core.available_streams

    @property
    def stream_limit(self) -> int:
        """Concurrent streams this connection may carry (the peer's limit, at most 100)."""
        assert isinstance(self._link.core, ClientConnection)
        return self._link.core.stream_limit

    @property
    def active_streams(self) -> int:
        """Streams not yet closed."""
        return len(self._link.streams)

    @property
    def closing(self) -> bool:
        """No new streams: GOAWAY sent or received, or the connection is gone."""
        return self._link.going_away or self._link.lost.done()

    def add_close_callback(self, callback: Callable[[HboneClient], None]) -> None:
        """Call `callback(client)` once the connection stops taking new streams."""
        if self.closing:
            self._link.loop.call_soon(callback, self)
        else:
            self._link.close_callbacks.append(lambda _: callback(self))

    async def open(self, authority: str, headers: Iterable[tuple[str, str]] = ()) -> HboneStream:
        """Send `CONNECT authority` with `headers` and wait for the answer: the open stream on
        2xx, `StreamRefused` (with the status) otherwise, `StreamResetError` or
        `ConnectionClosedError` if the stream or connection died first."""
        link = self._link
        if self.closing:
            raise ConnectionClosedError("the HBONE connection is closing; open a new one")
        headers = tuple(headers)
        core = link.core
        assert isinstance(core, ClientConnection)
        stream_id = link.guard(core.open_stream, authority, headers)
        stream = HboneStream(link, stream_id, authority, headers)
        link.streams[stream_id] = stream
        link.flush()
        try:
            await stream._wait_answer()
        except asyncio.CancelledError:
            stream.reset()
            raise
        except StreamResetError as e:
            if e.error_code == ErrorCodes.REFUSED_STREAM:
                link.stop_new_streams()  # the server is draining (RFC 9113 §8.7): go elsewhere
            raise
        return stream

    def close(self) -> None:
        """GOAWAY: no new streams; the connection ends when the open ones have."""
        self._link.close()

    def abort(self) -> None:
        """Close the connection now; every open stream is reset."""
        self._link.abort()

    async def wait_closed(self) -> None:
        """Wait until the connection is gone."""
        await asyncio.shield(self._link.lost)


class HboneServer:
    """Accepts mTLS connections and hands each CONNECT to `handler(stream)` in its own task.

    `contexts` picks the server certificate per connection from the destination (local) IP,
    before the handshake (ztunnel answers as the destination workload; there is no SNI); a plain
    SSLContext serves every connection. The handler must `accept()` or `reject(status)` the
    stream; one that returns without answering gets 503, one that raises gets its stream reset.
    """

    def __init__(
        self,
        contexts: ContextSelector | ssl.SSLContext,
        handler: Handler,
        *,
        trust_domain: str | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self._select: ContextSelector = (lambda _: contexts) if isinstance(contexts, ssl.SSLContext) else contexts
        self._handler = handler
        self._trust_domain = trust_domain
        self._handshake_timeout = handshake_timeout
        self._listeners: list[socket.socket] = []
        self._links: set[Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.handshake_failures = 0  # counted for telemetry

    async def listen(self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None) -> None:
        """Start accepting on `host:port`, or on a listening `sock` made by the caller (e.g. inside
        a pod's network namespace, with the mesh's mark). May be called again for more listeners."""
        if sock is None:
            sock = socket.create_server((host, port), backlog=_BACKLOG)
        sock.setblocking(False)
        self._listeners.append(sock)
        self._spawn(self._accept_loop(sock))

    @property
    def address(self) -> tuple[str, int]:
        """The first listener's address."""
        return self._listeners[0].getsockname()[:2]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every listener's address."""
        return [sock.getsockname()[:2] for sock in self._listeners]

    @property
    def connections(self) -> int:
        """Connections currently open."""
        return len(self._links)

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, drain every connection (no new streams; GOAWAY once its streams are
        done), wait up to `grace` seconds, then drop what is left (stop, wait, force)."""
        for task in [t for t in self._tasks if t.get_coro().__name__ == "_accept_loop"]:  # type: ignore[union-attr]
            task.cancel()
        for sock in self._listeners:
            sock.close()
        for link in list(self._links):
            link.close()
        pending = [link.lost for link in self._links]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for link in list(self._links):
            link.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as e:
                if listener.fileno() < 0:
                    return
                log.warning("hbone: accept failed: %s", e)  # e.g. EMFILE: back off, keep serving
                await asyncio.sleep(0.1)
                continue
            self._spawn(self._handshake(conn))

    async def _handshake(self, conn: socket.socket) -> None:
        """TLS with the certificate chosen by the destination address, then HTTP/2.

        The context is chosen on the raw accepted socket, before any transport exists: with
        `start_tls` on an accepted transport, uvloop can lose a ClientHello that arrived first.
        """
        loop = asyncio.get_running_loop()
        local, peer = conn.getsockname(), conn.getpeername()
        context = self._select(local[0])
        if context is None:
            log.info("hbone: no certificate for destination %s; connection from %s refused", local, peer)
            conn.close()
            return
        set_keepalive(conn)
        link = Link(ServerConnection(), self._serve)
        try:
            await loop.connect_accepted_socket(
                lambda: link, conn, ssl=context, ssl_handshake_timeout=self._handshake_timeout
            )
            ssl_object = link.transport.get_extra_info("ssl_object") if link.transport else None
            check_alpn(ssl_object)
            identity = check_client_identity(ssl_object, self._trust_domain)
        except (OSError, TimeoutError, ssl.SSLError, HboneError) as e:
            self.handshake_failures += 1
            log.info("hbone: handshake from %s failed: %s", peer, e)
            link.abort() if link.transport else conn.close()
            return
        self._links.add(link)
        link.lost.add_done_callback(lambda _: self._links.discard(link))
        link.start(identity)

    def _serve(self, stream: HboneStream) -> None:
        """Run the handler for a new stream; a done callback, not a wrapping coroutine, deals
        with its end (one frame less held for every open tunnel)."""
        task = asyncio.ensure_future(self._handler(stream))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._served, stream))

    def _served(self, stream: HboneStream, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("hbone: handler failed for %r", stream, exc_info=error)
            stream.reset(ErrorCodes.INTERNAL_ERROR)
            return
        if stream.status is None and not stream.closed:
            stream.reject(503)


def set_keepalive(sock: socket.socket) -> None:
    """TCP keepalive as ztunnel sets it on HBONE connections (istio-ambient-protocols §6): first
    probe after 180 s idle, then every 180 s, 9 probes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, _KEEPALIVE_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, _KEEPALIVE_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, _KEEPALIVE_PROBES)
