"""One HBONE connection's I/O, shared by client and server (driver.py): an asyncio Protocol that
feeds transport bytes to the sans-IO core, hands the core's events to the streams, and writes the
core's bytes back.

Bytes go from the transport's callback straight into the core, with no task switch per read.
Reading is never paused: back-pressure is per stream, by withheld WINDOW_UPDATEs (Lessons 4).

Link is a BufferedProtocol: the TLS layer decrypts into one read buffer shared by every link of
the process (the core copies what it keeps before the next read can happen). As a plain Protocol,
uvloop's TLS transport allocates a 256 KiB bytes object per read and shrinks it to the record's
size: for a 1 KB request that is an mmap, an mremap and a munmap system call, measured at about a
third of ztunnel's system calls per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from h2.errors import ErrorCodes

from . import events as ev
from .protocol import ClientConnection, ServerConnection
from .stream import HboneStream, map_protocol_error

log = logging.getLogger(__name__)

T = TypeVar("T")

# Let a few TLS writes queue in the TLS transport before writers wait (asyncio's default of
# 64 KiB would pause after every write), and not much more: while the socket is full, what is
# queued waits as ciphertext in the TLS layer's outgoing buffer, which keeps its largest size
# for the connection's life. A 4 MiB limit left each pooled connection that once carried bulk
# 4.5 MB larger; at 512 KiB it is 0.2 MB, with the same bulk throughput.
_TRANSPORT_HIGH_WATER = 512 << 10
_TRANSPORT_LOW_WATER = 128 << 10
_TLS_WRITE_MAX = 256 << 10  # plaintext per write to the TLS transport (see flush)
_READ_BUFFER_SIZE = 256 << 10  # what uvloop's TLS layer reads at most per call (SSL_READ_MAX_SIZE)
_read_buffer: memoryview | None = None


def _shared_read_buffer() -> memoryview:
    """The process's one decrypt buffer (made on first use; the event loop is single-threaded and
    each read is consumed before the next one starts)."""
    global _read_buffer
    if _read_buffer is None:
        _read_buffer = memoryview(bytearray(_READ_BUFFER_SIZE))
    return _read_buffer


def _tls_writes(parts: list[bytes | memoryview], limit: int) -> Iterator[list[bytes | memoryview]]:
    """`parts` regrouped, in order, into writes of at most `limit` bytes (large parts cut)."""
    batch: list[bytes | memoryview] = []
    size = 0
    for part in parts:
        if len(part) > limit:
            view = memoryview(part)
            pieces: list[bytes | memoryview] = [view[i : i + limit] for i in range(0, len(view), limit)]
        else:
            pieces = [part]
        for piece in pieces:
            if batch and size + len(piece) > limit:
                yield batch
                batch, size = [], 0
            batch.append(piece)
            size += len(piece)
    if batch:
        yield batch


class Link(asyncio.BufferedProtocol):
    """One HBONE connection's I/O: transport bytes into the core, core events to the streams,
    core bytes out to the transport. Input that arrives before `start()` (i.e. before the peer's
    identity was checked) is held back."""

    def __init__(self, core: ClientConnection | ServerConnection, on_request: Callable[[HboneStream], None] | None):
        self.loop = asyncio.get_running_loop()
        self.core = core
        self.transport: asyncio.Transport | None = None
        self.peer_identity: str | None = None
        self.local_address: tuple[str, int] | None = None
        self.peer_address: tuple[str, int] | None = None
        self.streams: dict[int, HboneStream] = {}
        self.write_paused = False
        self.going_away = False
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.close_callbacks: list[Callable[[Link], None]] = []
        self._on_request = on_request
        self._started = False
        self._early: list[bytes] = []
        self._read_buffer = _shared_read_buffer()
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.DataReceived: self._on_data,
            ev.StreamEnded: lambda e: self.streams[e.stream_id]._on_eof(),
            ev.StreamOpened: self._on_opened,
            ev.StreamAccepted: self._on_answer,
            ev.StreamRejected: self._on_answer,
            ev.StreamReset: lambda e: self.streams[e.stream_id]._on_reset(e.error_code, e.remote),
            ev.StreamClosed: self._on_stream_closed,
            ev.WindowUpdated: lambda e: self.streams[e.stream_id]._on_writable(),
            ev.ConnectionClosed: self._on_connection_closed,
            ev.RequestRefused: lambda e: log.info("hbone: refused stream %d: %s", e.stream_id, e.reason),
        }

    @property
    def server_core(self) -> ServerConnection:
        assert isinstance(self.core, ServerConnection)
        return self.core

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.attach(transport)  # type: ignore[arg-type]

    def attach(self, transport: asyncio.Transport) -> None:
        """Take the TLS transport (from create_connection, or start_tls which does not call
        connection_made)."""
        self.transport = transport
        transport.set_write_buffer_limits(_TRANSPORT_HIGH_WATER, _TRANSPORT_LOW_WATER)
        self.local_address = transport.get_extra_info("sockname")
        self.peer_address = transport.get_extra_info("peername")

    def start(self, peer_identity: str) -> None:
        """The peer is verified: send our preface and process what it already sent."""
        self.peer_identity = peer_identity
        self._started = True
        self.flush()
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        """Feed the core (which copies `data` into its own buffer before anything else runs)."""
        if not self._started:
            self._early.append(bytes(data))
            return
        self.dispatch(self.core.receive_data(data))
        self.flush()

    def eof_received(self) -> bool:
        return False  # TLS cannot half-close; HBONE half-closes streams with END_STREAM instead

    def connection_lost(self, exc: Exception | None) -> None:
        self.dispatch(self.core.connection_lost(str(exc) if exc else "connection closed"))
        self.write_paused = False
        if not self.lost.done():
            self.lost.set_result(None)
        self._notify_closing()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream._on_writable()

    # -- used by streams and owners --------------------------------------------------------------

    def flush(self) -> None:
        """Write what the core has to send. A closing transport is skipped: under uvloop a write
        to it raises inside the SSL protocol and kills the connection (Lessons 3)."""
        parts = self.core.parts_to_send()
        if not parts or self.transport is None or self.transport.is_closing():
            return
        if len(parts) == 1 and len(parts[0]) <= _TLS_WRITE_MAX:
            self.transport.write(parts[0])
            return
        # Large payloads go to the TLS layer as they are (not joined into one buffer), at most
        # _TLS_WRITE_MAX per write: the TLS layer encrypts a whole write into its outgoing
        # buffer before sending, and that buffer keeps its largest size for the connection's
        # life (a 4 MiB window's worth of frames in one write grew a pooled connection by 4 MiB).
        for batch in _tls_writes(parts, _TLS_WRITE_MAX):
            self.transport.writelines(batch)

    def guard(self, operation: Callable[..., T], *args: Any) -> T:
        """Run a core operation, mapping its errors into the driver's exception family."""
        try:
            return operation(*args)
        except ev.HboneProtocolError as e:
            raise map_protocol_error(args[0] if args else 0, e) from None

    def dispatch(self, events: Iterable[ev.Event]) -> None:
        """Hand each core event to the stream (or owner) it concerns."""
        handlers = self._handlers
        for event in events:
            handlers[type(event)](event)

    def close(self, error_code: int = ErrorCodes.NO_ERROR, reason: str = "") -> None:
        """Stop taking streams; GOAWAY and close once none is left (at once for an error code)."""
        self._notify_closing()
        self.dispatch(self.core.close(error_code, reason))
        self.flush()

    def abort(self) -> None:
        """Drop the connection now, without GOAWAY."""
        if self.transport is not None:
            self.transport.abort()

    # -- event handlers ---------------------------------------------------------------------------

    def _on_data(self, event: ev.DataReceived) -> None:
        self.streams[event.stream_id]._on_data(event.data)

    def _on_opened(self, event: ev.StreamOpened) -> None:
        stream = HboneStream(self, event.stream_id, event.authority, event.headers)
        self.streams[event.stream_id] = stream
        if self._on_request is not None:
            self._on_request(stream)

    def _on_answer(self, event: ev.StreamAccepted | ev.StreamRejected) -> None:
        self.streams[event.stream_id]._on_answer(event.status, event.headers)

    def _on_stream_closed(self, event: ev.StreamClosed) -> None:
        stream = self.streams.pop(event.stream_id, None)
        if stream is not None:
            stream._on_closed()

    def _on_connection_closed(self, event: ev.ConnectionClosed) -> None:
        """The core is done (GOAWAY either way, or the transport lost): close the transport
        after the last bytes (our GOAWAY) are written."""
        if event.error_code != ErrorCodes.NO_ERROR or event.remote:
            log.info("hbone: connection with %s closed: %s", self.peer_address, event.reason or event.error_code)
        self._notify_closing()
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def stop_new_streams(self) -> None:
        """Open no more streams here (the peer refuses them); the open ones carry on."""
        self._notify_closing()

    def _notify_closing(self) -> None:
        if not self.going_away:
            self.going_away = True
            callbacks, self.close_callbacks = self.close_callbacks, []
            for callback in callbacks:
                callback(self)
