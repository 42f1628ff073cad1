"""Plain TCP relaying (passthrough outbound, plaintext inbound): both ways, with half-close.

A FIN from one side becomes `shutdown(SHUT_WR)` towards the other while the opposite direction
keeps flowing, so request/response protocols that half-close work unchanged; an error on either
side aborts both with RST. The HBONE side has its own splice (mesh/hbone/splice.py) with the same
rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable
from dataclasses import dataclass

from .connection import ConnectionRecord, Tracker

CHUNK = 256 << 10
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class RelayResult:
    """Bytes from the downstream (client) side to upstream, and back; the error that ended it."""

    upstream: int
    downstream: int
    error: BaseException | None = None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: list[int], index: int) -> None:
    while True:
        data = await reader.read(CHUNK)
        if not data:
            if writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()
            return
        writer.write(data)
        counts[index] += len(data)
        await writer.drain()


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort a TCP connection with RST (SO_LINGER 0), as ztunnel answers a refused connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


def reset_socket(sock: socket.socket) -> None:
    """Close a raw accepted socket with RST: the client sees the refusal at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


async def relay(
    down: tuple[asyncio.StreamReader, asyncio.StreamWriter], up: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> RelayResult:
    """Copy until both directions have ended; then close both sides and return the counts."""
    counts = [0, 0]
    tasks = [
        asyncio.ensure_future(_pipe(down[0], up[1], counts, 0)),
        asyncio.ensure_future(_pipe(up[0], down[1], counts, 1)),
    ]
    error: BaseException | None = None
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        reset(down[1])
        reset(up[1])
        raise
    for task in done:
        if task.exception() is not None:
            error = error or task.exception()
    if error is not None:
        for task in pending:
            task.cancel()
        reset(down[1])
        reset(up[1])
    for _, writer in (down, up):
        writer.close()
        with contextlib.suppress(OSError, RuntimeError):
            await writer.wait_closed()
    return RelayResult(counts[0], counts[1], error)


async def relay_tracked(
    conn: socket.socket, connect: Awaitable[socket.socket], tracker: Tracker, record: ConnectionRecord
) -> None:
    """Connect upstream, relay both ways and account for it; a failed connect resets the client."""
    try:
        upstream = await connect
    except (OSError, TimeoutError) as e:
        tracker.refused(record, f"cannot connect: {e}", "CONNECT")
        reset_socket(conn)
        return
    down = await asyncio.open_connection(sock=conn)
    up = await asyncio.open_connection(sock=upstream)
    tracker.opened(record)
    result = await relay(down, up)
    error = f"{type(result.error).__name__}: {result.error}" if result.error else ""
    tracker.closed(record, result.upstream, result.downstream, error)
