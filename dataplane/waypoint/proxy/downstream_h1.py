"""HTTP/1.1 inside a CONNECT stream (http1.py): keep-alive, content-length and chunked bodies,
one request at a time as HTTP/1.1 requires; responses are streamed, not buffered."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from . import http1
from .byte_stream import ByteStream, StreamClosed, next_http1_event
from .messages import HOP_BY_HOP, MAX_REQUEST_BODY, HttpRequest, HttpResponse, text_response

log = logging.getLogger("waypoint.http1")
Handle = Callable[[HttpRequest], Awaitable[HttpResponse]]
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BadRequest(Exception):
    """The client's bytes are not HTTP/1.1 (400) or its body is too large (413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_body(parser: http1.Parser, stream: ByteStream) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        event = await next_http1_event(parser, stream)
        if type(event) is bytes:
            size += len(event)
            if size > MAX_REQUEST_BODY:
                raise BadRequest(413, "request body too large")
            parts.append(event)
        elif event is http1.END:
            return b"".join(parts)
        else:
            raise BadRequest(400, f"unexpected {event!r} in a request body")


def _request(head: http1.RequestHead, body: bytes) -> HttpRequest:
    authority = next((v for k, v in head.headers if k == "host"), "")
    kept = [(k, v) for k, v in head.headers if k not in HOP_BY_HOP and k != "content-length" and k != "expect"]
    return HttpRequest(head.method, head.target, authority, kept, body, "HTTP/1.1")


async def send_response(
    stream: ByteStream, response: HttpResponse, *, method: str = "GET", keep_alive: bool = True, chunked: bool = True
) -> bool:
    """Send `response` to a request of `method`; True if the connection may carry another request.

    Framing: content-length when the size is known, else chunked (`chunked`: the client speaks
    HTTP/1.1), else the end of the connection. A streamed body that is shorter or longer than its
    announced length ends the connection (the client sees the truncation), as Envoy does."""
    headers = [(k, v) for k, v in response.headers if k not in HOP_BY_HOP and k != "content-length"]
    with_body = http1.body_allowed(response.status, method)
    length = len(response.body) if isinstance(response.body, bytes) else response.length
    if length is not None and response.status not in (204, 304) and response.status >= 200:
        headers.append(("content-length", str(length)))
    elif with_body and chunked:
        headers.append(("transfer-encoding", "chunked"))
    elif with_body:
        keep_alive = False  # the body ends with the connection
    if not keep_alive:
        headers.append(("connection", "close"))
    head = http1.response_head(response.status, headers)
    if isinstance(response.body, bytes):
        # One write for head and body: each write is an HBONE DATA frame, a TLS record and a
        # send system call, here and again in the peer's ztunnel.
        body = response.body if with_body else b""
        await stream.write(head + body)
        response.bytes_sent = len(body)
        return keep_alive
    await stream.write(head)  # a streamed body: the head goes now, the chunks as they come
    sent = 0
    async for part in response.body:
        if not part or not with_body:
            continue
        sent += len(part)
        if length is not None and sent > length:
            log.info("http1: upstream body longer than its content-length %d; connection closed", length)
            return False
        await stream.write(http1.chunk(part) if length is None and chunked else part)
        response.bytes_sent = sent
    if with_body and length is not None and sent != length:
        log.info("http1: response body ended at %d of %d bytes; connection closed", sent, length)
        return False
    if with_body and length is None and chunked:
        await stream.write(http1.LAST_CHUNK)
    return keep_alive


async def serve_h1(stream: ByteStream, first: bytes, handle: Handle) -> None:
    """Serve requests on `stream` until the client closes or asks to (`Connection: close`)."""
    parser = http1.Parser()
    while True:
        try:
            if first:
                parser.feed(first)
                first = b""
            event = await next_http1_event(parser, stream)
            if event is http1.CLOSED:
                return
            if not isinstance(event, http1.RequestHead):
                raise BadRequest(400, f"expected a request, got {event!r}")
            head = event
            if head.expect_continue:
                await stream.write(CONTINUE)
            request = _request(head, await _read_body(parser, stream))
        except (BadRequest, http1.ProtocolError) as e:
            reply = text_response(e.status, str(e))
            with contextlib.suppress(StreamClosed):
                await send_response(stream, reply, keep_alive=False)
            stream.close()
            return
        except StreamClosed:
            return
        response = await handle(request)
        keep_alive = head.keep_alive and not parser.upgraded
        try:
            keep_alive = await send_response(
                stream, response, method=head.method, keep_alive=keep_alive, chunked=head.version == "1.1"
            )
        except http1.HeadError as e:  # e.g. a header modifier put a line break into a value
            log.warning("http1: response not sent: %s", e)
            with contextlib.suppress(StreamClosed):
                await send_response(stream, text_response(502, "invalid response head"), keep_alive=False)
            keep_alive = False
        if not keep_alive:
            stream.close()
            return
