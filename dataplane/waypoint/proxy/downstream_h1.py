"""HTTP/1.1 inside a CONNECT stream (h11): keep-alive, content-length and chunked bodies, one
request at a time as HTTP/1.1 requires; responses are streamed, not buffered."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import h11

from .byte_stream import ByteStream, StreamClosed
from .messages import HOP_BY_HOP, MAX_REQUEST_BODY, HttpRequest, HttpResponse, text_response

log = logging.getLogger("waypoint.http1")
Handle = Callable[[HttpRequest], Awaitable[HttpResponse]]
MAX_HEAD = 64 << 10


class BadRequest(Exception):
    """The client's bytes are not HTTP/1.1 (400) or its body is too large (413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _next_event(conn: h11.Connection, stream: ByteStream) -> object:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            raise BadRequest(e.error_status_hint, str(e)) from None
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.read())


async def _read_body(conn: h11.Connection, stream: ByteStream) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, stream)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_REQUEST_BODY:
                raise BadRequest(413, "request body too large")
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(parts)
        else:
            raise BadRequest(400, f"unexpected {type(event).__name__} in a request body")


def _request(event: h11.Request, body: bytes) -> HttpRequest:
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
    authority = next((v for k, v in headers if k == "host"), "")
    kept = [(k, v) for k, v in headers if k not in HOP_BY_HOP and k != "content-length"]
    return HttpRequest(event.method.decode(), event.target.decode("latin-1"), authority, kept, body, "HTTP/1.1")


async def send_response(conn: h11.Connection, stream: ByteStream, response: HttpResponse) -> None:
    """Send `response`; a body of unknown length goes chunked (h11 picks the framing)."""
    headers = [(k, v) for k, v in response.headers if k not in HOP_BY_HOP and k != "content-length"]
    if isinstance(response.body, bytes):
        headers.append(("content-length", str(len(response.body))))
    elif response.length is not None:
        headers.append(("content-length", str(response.length)))
    head = conn.send(h11.Response(status_code=response.status, headers=headers))
    if isinstance(response.body, bytes):
        # One write for head, body and end: each write is an HBONE DATA frame, a TLS record and
        # a send system call, here and again in the peer's ztunnel.
        body = conn.send(h11.Data(data=response.body)) if response.body else b""
        await stream.write(head + body + conn.send(h11.EndOfMessage()))
        response.bytes_sent = len(response.body)
        return
    await stream.write(head)  # a streamed body: the head goes now, the chunks as they come
    async for chunk in response.body:
        if chunk:
            response.bytes_sent += len(chunk)
            await stream.write(conn.send(h11.Data(data=chunk)))
    await stream.write(conn.send(h11.EndOfMessage()))


async def serve_h1(stream: ByteStream, first: bytes, handle: Handle) -> None:
    """Serve requests on `stream` until the client closes or asks to (`Connection: close`)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    if first:  # h11 takes b"" as the end of the stream
        conn.receive_data(first)
    while True:
        try:
            event = await _next_event(conn, stream)
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                raise BadRequest(400, f"expected a request, got {type(event).__name__}")
            request = _request(event, await _read_body(conn, stream))
        except BadRequest as e:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                reply = text_response(e.status, str(e))
                reply.headers.append(("connection", "close"))
                with contextlib.suppress(StreamClosed, h11.LocalProtocolError):
                    await send_response(conn, stream, reply)
            stream.close()
            return
        except StreamClosed:
            return
        response = await handle(request)
        try:
            await send_response(conn, stream, response)
        except h11.LocalProtocolError as e:  # e.g. the upstream's body was shorter than announced
            log.info("http1: response aborted: %s", e)
            stream.close()
            return
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            stream.close()
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            stream.close()
            return
