"""HTTP/2 (and gRPC) inside a CONNECT stream (h2): streams are handled concurrently, each in its
own task; bodies are sent as the peer's flow-control windows allow.

Importing mesh.hbone first replaces hyperframe's per-frame `repr` that h2 formats for every
frame it receives (docs/hbone.md, "Frame count, not bytes, is the cost").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error

import mesh.hbone  # noqa: F401  (replaces hyperframe's per-frame repr that h2 formats)

from .byte_stream import ByteStream, StreamClosed
from .messages import HOP_BY_HOP, MAX_REQUEST_BODY, HttpRequest, HttpResponse

log = logging.getLogger("waypoint.http2")
Handle = Callable[[HttpRequest], Awaitable[HttpResponse]]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_WINDOW = 4 << 20


class _Pending:
    __slots__ = ("body", "headers", "size", "task")

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = headers
        self.body: list[bytes] = []
        self.size = 0
        self.task: asyncio.Task[None] | None = None


class H2Server:
    """One downstream HTTP/2 connection (see the module docstring)."""

    def __init__(self, stream: ByteStream, handle: Handle) -> None:
        self._stream = stream
        self._handle = handle
        self._conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self._pending: dict[int, _Pending] = {}
        self._window_open = asyncio.Event()
        self._closed = False

    async def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data and not self._closed:
            await self._stream.write(data)

    async def run(self, first: bytes) -> None:
        """Serve until the client closes the connection."""
        conn = self._conn
        conn.local_settings.initial_window_size = _WINDOW
        conn.initiate_connection()
        conn.increment_flow_control_window(_WINDOW)
        try:
            await self._flush()
            data = first
            while data:
                self._receive(data)
                await self._flush()
                data = await self._stream.read()
        except (H2Error, StreamClosed) as e:
            log.debug("http2: connection ended: %s", e)
        finally:
            self._closed = True
            for pending in self._pending.values():
                if pending.task is not None:
                    pending.task.cancel()
            self._stream.close()

    def _receive(self, data: bytes) -> None:
        for event in self._conn.receive_data(data):
            if isinstance(event, RequestReceived):
                self._pending[event.stream_id] = _Pending(list(event.headers))
            elif isinstance(event, DataReceived):
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                pending = self._pending.get(event.stream_id)
                if pending is not None:
                    pending.size += len(event.data)
                    if pending.size > MAX_REQUEST_BODY:
                        self._conn.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
                        del self._pending[event.stream_id]
                        continue
                    pending.body.append(event.data)
            elif isinstance(event, StreamEnded):
                pending = self._pending.get(event.stream_id)
                if pending is not None and pending.task is None:
                    pending.task = asyncio.ensure_future(self._respond(event.stream_id, pending))
            elif isinstance(event, StreamReset):
                pending = self._pending.pop(event.stream_id, None)
                if pending is not None and pending.task is not None:
                    pending.task.cancel()
            elif isinstance(event, WindowUpdated):
                self._window_open.set()
            elif isinstance(event, ConnectionTerminated):
                self._closed = True

    def _request(self, pending: _Pending) -> HttpRequest:
        pseudo = {k: v for k, v in pending.headers if k.startswith(":")}
        headers = [(k, v) for k, v in pending.headers if not k.startswith(":") and k not in HOP_BY_HOP]
        return HttpRequest(
            method=pseudo.get(":method", "GET"),
            target=pseudo.get(":path", "/"),
            authority=pseudo.get(":authority", "") or next((v for k, v in headers if k == "host"), ""),
            headers=headers,
            body=b"".join(pending.body),
            protocol="HTTP/2",
            scheme=pseudo.get(":scheme", "http"),
        )

    async def _respond(self, stream_id: int, pending: _Pending) -> None:
        try:
            response = await self._handle(self._request(pending))
            await self._send(stream_id, response)
        except asyncio.CancelledError:
            raise
        except (H2Error, StreamClosed) as e:
            log.debug("http2: stream %d ended: %s", stream_id, e)
        except Exception:
            log.exception("http2: stream %d failed", stream_id)
            with contextlib.suppress(H2Error, StreamClosed):
                self._conn.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
                await self._flush()
        finally:
            self._pending.pop(stream_id, None)

    async def _send(self, stream_id: int, response: HttpResponse) -> None:
        conn = self._conn
        headers = [(":status", str(response.status))]
        headers += [(k, v) for k, v in response.headers if k not in HOP_BY_HOP]
        body_is_empty = isinstance(response.body, bytes) and not response.body
        conn.send_headers(stream_id, headers, end_stream=body_is_empty and not response.trailers)
        await self._flush()
        if isinstance(response.body, bytes):
            if response.body:
                await self._send_data(stream_id, response.body, response)
        else:
            async for chunk in response.body:
                if chunk:
                    await self._send_data(stream_id, chunk, response)
        if response.trailers:
            conn.send_headers(stream_id, response.trailers, end_stream=True)
        elif not body_is_empty:
            conn.end_stream(stream_id)
        await self._flush()

    async def _send_data(self, stream_id: int, data: bytes, response: HttpResponse) -> None:
        """Send as the windows allow, waiting for WINDOW_UPDATE when they are shut."""
        conn = self._conn
        view = memoryview(data)
        while view:
            if self._closed:
                raise StreamClosed("the connection is closed")
            window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if window <= 0:
                self._window_open.clear()
                await self._window_open.wait()
                continue
            conn.send_data(stream_id, bytes(view[:window]))
            response.bytes_sent += min(window, len(view))
            view = view[window:]
            await self._flush()
