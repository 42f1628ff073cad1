"""The downstream HTTP/1.1 codec over an in-memory byte stream: chunked and content-length
request bodies, keep-alive, a streamed response of unknown length sent chunked, 400 on garbage."""

from __future__ import annotations

import asyncio

from dataplane.waypoint.proxy.downstream_h1 import serve_h1
from dataplane.waypoint.proxy.messages import HttpRequest, HttpResponse


class Pipe:
    """The transport: bytes the client wrote, and what the server answered."""

    def __init__(self, incoming: bytes) -> None:
        self.incoming = [incoming]
        self.out = b""
        self.closed = False

    async def read(self) -> bytes:
        return self.incoming.pop(0) if self.incoming else b""

    async def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True


def test_keep_alive_chunked_bodies_and_streamed_response() -> None:
    seen: list[HttpRequest] = []

    async def handle(request: HttpRequest) -> HttpResponse:
        seen.append(request)

        async def body():
            yield b"hello "
            yield request.body

        return HttpResponse(200, [("x-a", "1")], body())

    wire = (
        b"POST /a HTTP/1.1\r\nHost: svc:80\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"PUT /b?q=1 HTTP/1.1\r\nHost: svc:80\r\nContent-Length: 2\r\nConnection: close\r\n\r\nxy"
    )
    pipe = Pipe(wire)
    asyncio.run(serve_h1(pipe, b"", handle))
    assert [(r.method, r.target, r.authority, r.body) for r in seen] == [
        ("POST", "/a", "svc:80", b"abc"),
        ("PUT", "/b?q=1", "svc:80", b"xy"),
    ]
    assert all(k not in ("host", "transfer-encoding", "content-length") for r in seen for k, _ in r.headers)
    assert pipe.out.count(b"HTTP/1.1 200 ") == 2
    assert b"transfer-encoding: chunked" in pipe.out.lower()
    assert b"hello abc" in pipe.out.replace(b"\r\n3\r\nabc", b"abc").replace(b"6\r\nhello \r\n", b"hello ")
    assert pipe.closed


def test_garbage_gets_400_and_close() -> None:
    async def handle(request: HttpRequest) -> HttpResponse:
        raise AssertionError("not a request")

    pipe = Pipe(b"\x16\x03\x01 not http\r\n\r\n")
    asyncio.run(serve_h1(pipe, b"", handle))
    assert pipe.out.startswith(b"HTTP/1.1 400 ")
    assert pipe.closed


def test_head_requests_get_no_body_and_http10_gets_close_delimited() -> None:
    async def handle(request: HttpRequest) -> HttpResponse:
        async def body():
            yield b"streamed"

        return HttpResponse(200, [], body() if request.target == "/stream" else b"hello", length=None)

    head = Pipe(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    asyncio.run(serve_h1(head, b"", handle))
    first, _, second = head.out.partition(b"HTTP/1.1 200 OK\r\n")[2].partition(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 5\r\n\r\n" in first and not first.endswith(b"hello")  # no body to HEAD
    assert second.endswith(b"connection: close\r\n\r\nhello") and head.closed

    old = Pipe(b"GET /stream HTTP/1.0\r\n\r\n")
    asyncio.run(serve_h1(old, b"", handle))
    assert b"transfer-encoding" not in old.out.lower() and old.out.endswith(b"\r\n\r\nstreamed")
    assert old.closed  # the end of the connection is the end of the body


def test_expect_continue_is_answered_before_the_body() -> None:
    async def handle(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, [], request.body)

    pipe = Pipe(b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
    pipe.incoming.append(b"hi")
    asyncio.run(serve_h1(pipe, b"", handle))
    assert pipe.out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n") and pipe.out.endswith(b"hi")
