"""The HTTP/1.1 codec (dataplane/waypoint/proxy/http1.py): what it parses, what it refuses, and
that it never writes a head that is not HTTP/1.1."""

from __future__ import annotations

import pytest

from dataplane.waypoint.proxy import http1


def events(parser: http1.Parser, *pieces: bytes) -> list:
    out = []
    for piece in pieces:
        parser.feed(piece)
        while (event := parser.next_event()) is not http1.NEED_DATA:
            out.append(event)
            if event is http1.CLOSED:
                return out
    return out


def test_pipelined_requests_with_chunked_body_and_trailers_in_pieces() -> None:
    wire = (
        b"POST /a?x=1 HTTP/1.1\r\nHost: svc:80\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
        b"GET /b HTTP/1.0\r\nHost: svc\r\n\r\n"
    )
    pieces = [wire[i : i + 7] for i in range(0, len(wire), 7)]  # heads and chunks split anywhere
    got = events(http1.Parser(), *pieces, b"")
    first, second = [e for e in got if isinstance(e, http1.RequestHead)]
    assert (first.method, first.target, first.version, first.keep_alive) == ("POST", "/a?x=1", "1.1", True)
    assert first.headers == [("host", "svc:80"), ("transfer-encoding", "chunked")]  # the trailer is dropped
    assert b"".join(e for e in got if type(e) is bytes) == b"abc"
    assert (second.method, second.version, second.keep_alive) == ("GET", "1.0", False)
    assert [e for e in got if isinstance(e, http1._Marker)] == [http1.END, http1.END, http1.CLOSED]


@pytest.mark.parametrize(
    "wire",
    [
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",  # CL.TE smuggling
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET / HTTP/1.1\r\nX: a\nInjected: b\r\n\r\n",  # bare LF
        b"GET / HTTP/1.1\r\nX : a\r\n\r\n",  # space before the colon
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00 not http\r\n\r\n",  # TLS where HTTP was expected
    ],
)
def test_malformed_requests_are_refused_with_400(wire: bytes) -> None:
    with pytest.raises(http1.ProtocolError) as refused:
        http1.Parser().feed(wire)
    assert refused.value.status == 400


def test_a_head_over_64_kib_is_431_whole_or_in_pieces() -> None:
    big = b"GET / HTTP/1.1\r\nX: " + b"a" * (70 << 10) + b"\r\n\r\n"
    with pytest.raises(http1.ProtocolError) as whole:
        http1.Parser().feed(big)
    parser = http1.Parser()
    with pytest.raises(http1.ProtocolError) as pieces:
        for i in range(0, len(big), 4096):
            parser.feed(big[i : i + 4096])
    assert whole.value.status == pieces.value.status == 431


def test_expect_continue_and_a_connection_closed_mid_body() -> None:
    parser = http1.Parser()
    parser.feed(b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nab")
    assert parser.next_event().expect_continue
    assert parser.next_event() == b"ab"
    with pytest.raises(http1.ProtocolError):
        parser.feed(b"")  # 3 bytes short


def test_responses_informational_bodiless_and_until_close() -> None:
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\nX: 1\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 200 OK\r\nServer: old\r\n\r\nuntil the end"
    )
    parser = http1.Parser(responses=True)
    got = events(parser, wire, b"")
    heads = [e for e in got if isinstance(e, http1.ResponseHead)]
    assert [h.status for h in heads] == [100, 204, 200, 200]
    assert heads[-1].keep_alive is False  # a body delimited by the close cannot share the connection
    assert [e for e in got if type(e) is bytes] == [b"ok", b"until the end"]
    assert got[-2:] == [http1.END, http1.CLOSED]


def test_an_idle_connection_is_reusable_only_between_messages() -> None:
    parser = http1.Parser(responses=True)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok")
    assert not parser.idle
    parser.next_event(), parser.next_event()
    parser.feed(b"ok")
    assert parser.next_event() == b"ok" and parser.next_event() is http1.END
    assert parser.idle


def test_heads_are_written_with_reason_phrases_and_checked() -> None:
    assert http1.response_head(404, [("content-length", "0")]) == b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    assert http1.request_head("GET", "/p?q", [("host", "a:80")]) == b"GET /p?q HTTP/1.1\r\nhost: a:80\r\n\r\n"
    assert http1.chunk(b"abc") == b"3\r\nabc\r\n"
    for bad in (
        lambda: http1.request_head("GET", "/", [("x", "a\r\nset-cookie: stolen")]),  # header injection
        lambda: http1.request_head("GET", "/ HTTP/1.1\r\nX:", []),
        lambda: http1.request_head("GE T", "/", []),
        lambda: http1.response_head(200, [("bad name", "v")]),
        lambda: http1.response_head(200, [("x", "snowman \u2603")]),  # not ISO-8859-1
    ):
        with pytest.raises(http1.HeadError):
            bad()
