"""One HBONE tunnel as the proxy code sees it: read, write, half-close, reset, counted bytes.

Owned by the connection's link (driver.py), which feeds it events; everything here runs on the
event loop thread, and none of it is thread-safe.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from h2.errors import ErrorCodes

from .errors import ConnectionClosedError, HboneError, StreamRefused, StreamResetError
from .events import HboneProtocolError, Headers, StreamStateError

if TYPE_CHECKING:
    from .link import Link

# A writer waits once this much is queued behind closed flow-control windows: enough to fill
# the next window the peer opens at once, small enough to bound memory per stream.
WRITE_HIGH_WATER = 1 << 20


class StreamSink(Protocol):
    """Takes a stream's events as they happen instead of through `read()` (splice.py's relay):
    no task waits per direction, so a tunnel costs a few objects, not a few coroutines."""

    def stream_data(self, data: bytes) -> None: ...  # call `acknowledge(len(data))` once drained
    def stream_eof(self) -> None: ...
    def stream_error(self, error: HboneError) -> None: ...
    def stream_writable(self) -> None: ...


class HboneStream:
    """A CONNECT stream: a bidirectional byte stream with half-close (END_STREAM ⇔ TCP FIN).

    Client side, `HboneClient.open` returns it once the server answered 2xx. Server side, the
    request handler gets it unanswered and must call `accept()` or `reject(status)`.
    `bytes_sent` and `bytes_received` count payload bytes for L4 telemetry.
    """

    # One per open tunnel, so no per-instance dict.
    __slots__ = (
        "_answer",
        "_chunks",
        "_close_callbacks",
        "_closed",
        "_eof",
        "_error",
        "_link",
        "_readable",
        "_sink",
        "_writable",
        "authority",
        "bytes_received",
        "bytes_sent",
        "request_headers",
        "response_headers",
        "status",
        "stream_id",
    )

    def __init__(self, link: Link, stream_id: int, authority: str, headers: Headers) -> None:
        self._link = link
        self.stream_id = stream_id
        self.authority = authority
        self.request_headers = headers
        self.status: int | None = None  # the CONNECT's answer, once given
        self.response_headers: Headers = ()
        self.bytes_sent = 0
        self.bytes_received = 0
        self._chunks: deque[bytes] | None = None  # made on the first unread DATA (sinks need none)
        self._eof = False
        self._error: HboneError | None = None
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._answer: asyncio.Future[None] | None = None  # made only for a client awaiting it
        self._closed = False
        self._close_callbacks: list[Callable[[HboneStream], None]] = []
        self._sink: StreamSink | None = None

    def __repr__(self) -> str:
        return f"<HboneStream {self.stream_id} {self.authority} peer={self.peer_identity}>"

    @property
    def peer_identity(self) -> str | None:
        """The SPIFFE identity at the other end of the mTLS connection."""
        return self._link.peer_identity

    @property
    def local_address(self) -> tuple[str, int] | None:
        """This side's socket address of the carrying connection (the destination IP, inbound)."""
        return self._link.local_address

    @property
    def peer_address(self) -> tuple[str, int] | None:
        """The other side's socket address of the carrying connection."""
        return self._link.peer_address

    @property
    def closed(self) -> bool:
        """Both directions are finished, or the stream was reset or refused."""
        return self._closed

    # -- server side: answering the CONNECT -------------------------------------------------------

    def accept(self, headers: Headers = ()) -> None:
        """Answer 200: the upstream is connected and bytes may flow."""
        self._link.guard(self._link.server_core.accept, self.stream_id, headers)
        self._link.flush()
        self.status = 200

    def reject(self, status: int) -> None:
        """Answer with a refusal: 400 bad request, 401 denied by policy, 503 no upstream."""
        self.status = status
        self._link.dispatch(self._link.guard(self._link.server_core.reject, self.stream_id, status))
        self._link.flush()

    # -- the byte stream ------------------------------------------------------------------------

    async def read(self, max_bytes: int = -1) -> bytes:
        """The next bytes of the stream (at most `max_bytes` if positive); b"" once the peer
        half-closed. `StreamResetError` if the stream was aborted."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._readable = self._link.loop.create_future()
            await self._readable
        chunk = self._chunks.popleft()
        if 0 < max_bytes < len(chunk):
            self._chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self.acknowledge(len(chunk))  # drained: only now does the peer get window back for it
        return chunk

    async def write(self, data: bytes | memoryview) -> None:
        """Send `data`; waits while too much is queued behind flow control or the connection's
        socket is backed up. `StreamResetError` if the stream was aborted."""
        self.send(data)
        while self._backed_up():
            self._writable = self._link.loop.create_future()
            await self._writable
            if self._error is not None:
                raise self._error

    def attach(self, sink: StreamSink) -> None:
        """From now on hand every event to `sink` (what already arrived first); `read()` and
        `write()` are then not to be used."""
        self._sink = sink
        chunks, self._chunks = self._chunks, None  # a sink gets everything from now on
        while chunks:
            sink.stream_data(chunks.popleft())
        if self._error is not None:
            sink.stream_error(self._error)
        elif self._eof:
            sink.stream_eof()

    def acknowledge(self, size: int) -> None:
        """A sink drained `size` bytes: only now does the peer get that window back."""
        if self._link.core.acknowledge(self.stream_id, size):
            self._link.flush()

    def send(self, data: bytes | memoryview) -> bool:
        """Send `data` without waiting; False once the writer should pause until the sink's
        `stream_writable()` (too much queued behind flow control, or the socket backed up).
        `StreamResetError` if the stream was aborted."""
        if self._error is not None:
            raise self._error
        link = self._link
        queued = link.guard(link.core.send_data, self.stream_id, data)
        link.flush()
        self.bytes_sent += len(data)
        return not self._backed_up(queued)

    def _backed_up(self, queued: int | None = None) -> bool:
        """Too much is queued behind flow control (`queued`, else the core's count), or the
        connection's socket is backed up."""
        if queued is None:
            queued = self._link.core.buffered(self.stream_id)
        return self._link.write_paused or queued > WRITE_HIGH_WATER

    def close_write(self) -> None:
        """Half-close: END_STREAM after what is queued (the tunnelled TCP FIN). Reading goes on."""
        if self._error is None and not self._closed:
            self._link.dispatch(self._link.guard(self._link.core.end_stream, self.stream_id))
            self._link.flush()

    def reset(self, error_code: int = ErrorCodes.CANCEL) -> None:
        """Abort both directions with RST_STREAM (CONNECT_ERROR for a failed TCP peer, RFC 9113
        §8.5)."""
        self._link.dispatch(self._link.core.reset_stream(self.stream_id, error_code))
        self._link.flush()

    def add_close_callback(self, callback: Callable[[HboneStream], None]) -> None:
        """Call `callback(stream)` once the stream is closed (at once if it already is)."""
        if self._closed:
            self._link.loop.call_soon(callback, self)
        else:
            self._close_callbacks.append(callback)

    async def wait_closed(self) -> None:
        """Wait until both directions are finished or the stream was aborted."""
        if not self._closed:
            done = self._link.loop.create_future()
            self.add_close_callback(lambda _: done.done() or done.set_result(None))
            await done

    # -- called by the link ---------------------------------------------------------------------

    def _wait_answer(self) -> asyncio.Future[None]:
        """The CONNECT's answer, for the client that sent it (made at once after sending, before
        any event can arrive; a server's streams never need one)."""
        if self._answer is None:
            self._answer = self._link.loop.create_future()
            # A client cancelled while waiting leaves a failure nobody reads: no warning for it.
            self._answer.add_done_callback(_retrieve)
        return self._answer

    def _on_answer(self, status: int, headers: Headers) -> None:
        self.status, self.response_headers = status, headers
        if self._answer is not None and not self._answer.done():
            if 200 <= status < 300:
                self._answer.set_result(None)
            else:
                self._answer.set_exception(StreamRefused(status, self.authority))

    def _on_data(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self._sink is not None:
            self._sink.stream_data(data)
            return
        if self._chunks is None:
            self._chunks = deque()
        self._chunks.append(data)
        self._wake_reader()

    def _on_eof(self) -> None:
        self._eof = True
        if self._sink is not None:
            self._sink.stream_eof()
            return
        self._wake_reader()

    def _on_reset(self, error_code: int, remote: bool, detail: str = "") -> None:
        self._fail(StreamResetError(error_code, remote, detail))

    def _on_writable(self) -> None:
        if self._sink is not None:
            self._sink.stream_writable()
            return
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionClosedError(f"stream {self.stream_id} closed before an answer"))
        self._on_writable()
        self._wake_reader()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            callback(self)
        self._sink = None  # nothing more comes; a sink that refers back is no longer held here

    def _fail(self, error: HboneError) -> None:
        first = self._error is None
        if first:
            self._error = error
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        if self._sink is not None:
            if first:
                self._sink.stream_error(error)
            return
        self._wake_reader()
        self._on_writable()

    def _wake_reader(self) -> None:
        waiter, self._readable = self._readable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _retrieve(answer: asyncio.Future[None]) -> None:
    if not answer.cancelled():
        answer.exception()


def map_protocol_error(stream_id: int, error: HboneProtocolError) -> HboneError:
    """The driver-level error for a core error raised by an operation on `stream_id`."""
    if isinstance(error, StreamStateError):
        return StreamResetError(int(error.error_code), False, str(error))
    return HboneError(str(error))
