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

# Matches the HTTP/2 frame size: one TCP read can fill one DATA frame (Lessons 2). In practice a
# StreamReader with asyncio's default 64 KiB limit hands over at most about twice that per read;
# raising the limit to 1 MiB was measured slower (bench/hbone_bench.py: 150-180 against 230-300
# MB/s), as larger writes pipeline worse between the two proxy processes.
CHUNK_SIZE = 1 << 20
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(frozen=True)
class SpliceResult:
    """What a relay carried: bytes from TCP into the stream and from the stream to TCP, and the
    error that ended it early, if any (both directions are then aborted)."""

    to_stream: int
    from_stream: int
    error: BaseException | None = None


async def splice(
    stream: HboneStream,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> SpliceResult:
    """Relay until both directions ended; close the TCP side and return the byte counts.

    An error on either side aborts both: the stream with RST_STREAM(CONNECT_ERROR), the TCP
    connection with RST. Cancellation aborts both too, then propagates.
    """
    counts = [0, 0]
    up = asyncio.ensure_future(_tcp_to_stream(stream, reader, counts, chunk_size))
    down = asyncio.ensure_future(_stream_to_tcp(stream, writer, counts))
    error: BaseException | None = None
    try:
        done, pending = await asyncio.wait((up, down), return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        up.cancel()
        down.cancel()
        _abort(stream, writer)
        raise
    for task in done:
        if task.exception() is not None:
            error = error or task.exception()
    if error is not None:
        for task in pending:
            task.cancel()
        _abort(stream, writer)
    writer.close()
    with suppress(OSError, HboneError):
        await writer.wait_closed()
    return SpliceResult(counts[0], counts[1], error)


async def _tcp_to_stream(stream: HboneStream, reader: asyncio.StreamReader, counts: list[int], chunk_size: int) -> None:
    while True:
        data = await reader.read(chunk_size)
        if not data:
            stream.close_write()  # the TCP FIN becomes END_STREAM
            return
        counts[0] += len(data)
        await stream.write(data)


async def _stream_to_tcp(stream: HboneStream, writer: asyncio.StreamWriter, counts: list[int]) -> None:
    while True:
        data = await stream.read()
        if not data:
            if writer.can_write_eof():
                with suppress(OSError):
                    writer.write_eof()  # END_STREAM becomes the TCP FIN
            return
        writer.write(data)
        counts[1] += len(data)
        await writer.drain()


def _abort(stream: HboneStream, writer: asyncio.StreamWriter) -> None:
    """Abort both sides: RST_STREAM(CONNECT_ERROR) and a TCP RST (RFC 9113 §8.5)."""
    stream.reset(ErrorCodes.CONNECT_ERROR)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()
