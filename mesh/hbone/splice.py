"""Relaying bytes both ways between an HBONE stream and a TCP connection, with half-close.

The rules are RFC 9113 §8.5's for CONNECT tunnels: a TCP FIN becomes END_STREAM and END_STREAM
becomes a FIN (`shutdown(SHUT_WR)`), so half-closed connections keep working through the mesh
(Lessons 6); a TCP error becomes RST_STREAM(CONNECT_ERROR), and a reset stream becomes a TCP RST.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from contextlib import suppress
from dataclasses import dataclass

from h2.errors import ErrorCodes

from .errors import HboneError
from .stream import HboneStream

_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(frozen=True)
class SpliceResult:
    """What a relay carried: bytes from TCP into the stream and from the stream to TCP, and the
    error that ended it early, if any (both directions are then aborted)."""

    to_stream: int
    from_stream: int
    error: BaseException | None = None


async def splice(stream: HboneStream, sock: socket.socket) -> SpliceResult:
    """Relay between `stream` and the connected TCP socket `sock` until both directions ended;
    close the socket and return the byte counts.

    An error on either side aborts both: the stream with RST_STREAM(CONNECT_ERROR), the TCP
    connection with RST. Cancellation aborts both too, then propagates.
    """
    tunnel = await start_splice(stream, sock)
    try:
        return await asyncio.shield(tunnel.finished)
    except asyncio.CancelledError:
        tunnel.abort(None)
        raise


async def start_splice(stream: HboneStream, sock: socket.socket) -> Tunnel:
    """Start relaying and return at once: the relay runs on callbacks alone, so a caller that
    only needs its end (`Tunnel.finished`) holds no task while a tunnel is open (ztunnel: one
    task and its frames less per connection)."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[SpliceResult] = loop.create_future()
    _, tunnel = await loop.connect_accepted_socket(lambda: Tunnel(stream, finished), sock)
    return tunnel


class Tunnel(asyncio.Protocol):
    """One relay, both directions as callbacks, no task per direction: TCP reads go straight into
    the stream (reading pauses while the stream is backed up), stream DATA straight into the
    socket (its window is given back only once the socket took it, so a slow reader slows the
    sender, not the proxy's memory). `finished` resolves with the SpliceResult; `cut(error)`
    aborts both sides and resolves it with `error` (a drain's deadline)."""

    __slots__ = (
        "_from_stream",
        "_reading_paused",
        "_stream",
        "_stream_done",
        "_tcp_done",
        "_to_stream",
        "_transport",
        "_unacknowledged",
        "_writing_paused",
        "finished",
    )

    def __init__(self, stream: HboneStream, finished: asyncio.Future[SpliceResult]) -> None:
        self._stream = stream
        self.finished = finished
        self._transport: asyncio.Transport | None = None
        self._to_stream = 0
        self._from_stream = 0
        self._tcp_done = False  # the TCP side's FIN became END_STREAM
        self._stream_done = False  # END_STREAM became the TCP FIN
        self._reading_paused = False
        self._writing_paused = False
        self._unacknowledged = 0  # bytes written to the socket while it was backed up

    # -- the TCP side ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        self._stream.attach(self)

    def data_received(self, data: bytes) -> None:
        self._to_stream += len(data)
        try:
            more = self._stream.send(data)
        except HboneError as e:
            self.abort(e)
            return
        if not more and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self._tcp_done = True
        self._stream.close_write()  # the TCP FIN becomes END_STREAM
        self._maybe_finish()
        return True  # keep the socket open for the other direction

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        owed, self._unacknowledged = self._unacknowledged, 0
        if owed:
            self._stream.acknowledge(owed)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():  # not closed by _finish: the TCP side failed
            self.abort(exc or ConnectionResetError("the TCP connection closed before the tunnel ended"))
        # The transport and this protocol refer to each other: part here, so a finished tunnel
        # is freed at once, not whenever the cycle collector next runs.
        self._transport = None

    # -- the stream side (StreamSink) --------------------------------------------------------------

    def stream_data(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        self._from_stream += len(data)
        if self._writing_paused:
            self._unacknowledged += len(data)
        else:
            self._stream.acknowledge(len(data))

    def stream_eof(self) -> None:
        self._stream_done = True
        transport = self._transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            with suppress(OSError):
                transport.write_eof()  # END_STREAM becomes the TCP FIN
        self._maybe_finish()

    def stream_error(self, error: HboneError) -> None:
        self.abort(error)

    def stream_writable(self) -> None:
        if self._reading_paused and self._transport is not None and not self._transport.is_closing():
            self._reading_paused = False
            self._transport.resume_reading()

    # -- ending ----------------------------------------------------------------------------------

    def abort(self, error: BaseException | None) -> None:
        """Abort both sides: RST_STREAM(CONNECT_ERROR) and a TCP RST (RFC 9113 §8.5). `error`
        (what ended it first) is the result's, not the reset this causes."""
        if error is not None:
            self._finish(error)
        self._stream.reset(ErrorCodes.CONNECT_ERROR)
        transport = self._transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            transport.abort()

    def _maybe_finish(self) -> None:
        if self._tcp_done and self._stream_done:
            self._finish(None)

    def cut(self, error: BaseException) -> None:
        """End the tunnel now, both sides aborted; `finished` says `error` (if still open)."""
        if not self.finished.done():
            self.abort(error)

    def _finish(self, error: BaseException | None) -> None:
        if self.finished.done():
            return
        if error is None and self._transport is not None:
            self._transport.close()
        self.finished.set_result(SpliceResult(self._to_stream, self._from_stream, error))


async def open_tcp(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to `host:port`, ready for `splice` (OSError if not)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock
