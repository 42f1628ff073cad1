"""HTTP/2 to an endpoint (gRPC, and requests that came in over HTTP/2): one HTTP/2 connection per
request over its own byte stream (a new HBONE CONNECT stream on the shared HBONE connection, so
no TLS handshake per request), one stream on it. Trailers (`grpc-status`, `grpc-message`) are
kept on the response, so they reach the downstream as trailers.

The request body is bounded (messages.MAX_REQUEST_BODY) and sent whole before the response is
read; while the peer's window is shut, frames are read and their events queued for later.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import H2Error

import mesh.hbone  # noqa: F401  (replaces hyperframe's per-frame repr that h2 formats)

from .byte_stream import ByteStream, StreamClosed
from .messages import HOP_BY_HOP, HttpRequest
from .upstream_response import UpstreamReset, UpstreamResponse

_WINDOW = 4 << 20


class _Client:
    """One client connection carrying one stream."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.events: collections.deque[Event] = collections.deque()
        self.sid = 1

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.write(data)

    async def pump(self) -> None:
        """Read once and queue the events (StreamClosed at the end of the stream)."""
        data = await self.stream.read()
        if not data:
            raise StreamClosed("the upstream closed the connection")
        self.events.extend(self.conn.receive_data(data))
        await self.flush()

    async def next_event(self) -> Event:
        while not self.events:  # each pump reads data or raises at the end of the stream
            await self.pump()
        event = self.events.popleft()
        if isinstance(event, StreamReset) and event.stream_id == self.sid:
            refused = event.error_code == ErrorCodes.REFUSED_STREAM
            raise UpstreamReset(f"stream reset by the upstream ({event.error_code!r})", refused=refused)
        if isinstance(event, ConnectionTerminated):
            raise UpstreamReset(f"connection closed by the upstream ({event.error_code!r})")
        return event

    async def send_body(self, body: bytes) -> None:
        view = memoryview(body)
        while view:  # each turn sends some bytes or waits for the peer to open its window
            window = min(self.conn.local_flow_control_window(self.sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                await self.pump()
                continue
            self.conn.send_data(self.sid, bytes(view[:window]))
            view = view[window:]
            await self.flush()


async def exchange_h2(
    stream: ByteStream, request: HttpRequest, path: str, authority: str, headers: list[tuple[str, str]]
) -> UpstreamResponse:
    """Send the request and return the response head; the body (and then the trailers) follow
    as the caller reads `body`. UpstreamReset when the upstream resets or closes first."""
    client = _Client(stream)
    conn = client.conn
    try:
        conn.local_settings.initial_window_size = _WINDOW
        conn.initiate_connection()
        conn.increment_flow_control_window(_WINDOW)
        out = [(":method", request.method), (":scheme", request.scheme), (":path", path), (":authority", authority)]
        out += [(k, v) for k, v in headers if k not in HOP_BY_HOP and k != "content-length"]
        if request.is_grpc:
            out.append(("te", "trailers"))  # gRPC servers require it (gRPC over HTTP/2, "Requests")
        conn.send_headers(client.sid, out, end_stream=not request.body)
        await client.flush()
        if request.body:
            await client.send_body(request.body)
            conn.end_stream(client.sid)
            await client.flush()
        for _ in range(100):  # 1xx heads are skipped; more than 100 of them is not HTTP
            event = await client.next_event()
            if isinstance(event, ResponseReceived) and event.stream_id == client.sid:
                break
        else:
            raise UpstreamReset("too many informational responses")
    except (H2Error, StreamClosed) as e:
        stream.close()
        raise UpstreamReset(str(e)) from None
    except BaseException:
        stream.close()
        raise
    head = [(k, v) for k, v in event.headers]
    status = int(next(v for k, v in head if k == ":status"))
    kept = [(k, v) for k, v in head if not k.startswith(":") and k not in HOP_BY_HOP and k != "content-length"]
    length = next((int(v) for k, v in head if k == "content-length" and v.isdigit()), None)
    response = UpstreamResponse(status, kept, _empty(), length)
    if event.stream_ended is not None:  # a headers-only (for gRPC, trailers-only) response
        stream.close()
        response.headers_only = True
        return response
    response.body = _body(client, response)
    return response


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover  (makes this an async generator)


async def _body(client: _Client, response: UpstreamResponse) -> AsyncIterator[bytes]:
    try:
        while True:  # ends with StreamEnded, or an error when the stream breaks
            event = await client.next_event()
            if isinstance(event, DataReceived) and event.stream_id == client.sid:
                client.conn.acknowledge_received_data(event.flow_controlled_length, client.sid)
                await client.flush()
                if event.data:
                    yield event.data
            elif isinstance(event, TrailersReceived) and event.stream_id == client.sid:
                response.trailers = [(k, v) for k, v in event.headers]
            elif isinstance(event, StreamEnded) and event.stream_id == client.sid:
                return
    except (H2Error, StreamClosed, UpstreamReset) as e:
        raise StreamClosed(f"upstream HTTP/2 body: {e}") from None
    finally:
        client.stream.close()
