"""HTTP/1.1 messages as a sans-IO codec: llhttp parses (through `httptools`, C), heads are
written here and checked (grammar and line count) before they leave.

Why not h11: the waypoint spent 38 % of its CPU in h11 (py-spy, bench/README.md); llhttp is
Node.js's parser, strict by default (it refuses Content-Length with Transfer-Encoding, duplicate
Content-Length, bare LF, spaces before a colon: the request-smuggling shapes), and `httptools`
is MagicStack's binding, the one uvicorn uses.

`Parser` turns bytes from one side of a connection into events, in order: a `RequestHead` or
`ResponseHead`, body bytes (de-chunked), `END` at the end of each message; `NEED_DATA` when it
needs more; `CLOSED` once the peer ended the stream between messages. Errors raise
`ProtocolError` with the status a server would answer. Trailers of chunked bodies are dropped.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus

import httptools

MAX_HEAD = 64 << 10  # request line or status line plus headers


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


END = _Marker("END")  # the current message is complete
NEED_DATA = _Marker("NEED_DATA")
CLOSED = _Marker("CLOSED")  # the peer closed between messages


class ProtocolError(Exception):
    """The peer's bytes are not HTTP/1.1; `status` is what a server answers (400, 413, 431)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    headers: list[tuple[str, str]]  # lower-case names, in order
    version: str  # "1.1" or "1.0"
    keep_alive: bool  # the connection may carry another request after this one
    expect_continue: bool  # `Expect: 100-continue`: the client waits for 100 before its body


@dataclass(slots=True)
class ResponseHead:
    status: int
    headers: list[tuple[str, str]]
    version: str
    keep_alive: bool


Event = RequestHead | ResponseHead | bytes | _Marker


class Parser:
    """One direction of one connection: requests (server side) or responses (client side)."""

    def __init__(self, responses: bool = False) -> None:
        self._responses = responses
        self._parser = httptools.HttpResponseParser(self) if responses else httptools.HttpRequestParser(self)
        self._events: deque[Event] = deque()
        self._target: list[bytes] = []
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._in_head = False  # between a message's first byte and the end of its head
        self._in_message = False  # between its first byte and its end
        self._until_close = False  # a response whose body ends when the connection does
        self._fed_in_head = 0
        self.upgraded = False  # an Upgrade or CONNECT request: nothing after it is parsed
        self.eof = False

    # --- bytes in, events out ----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes read from the peer; b"" is the end of its stream."""
        if not data:
            self._feed_eof()
            return
        if self.upgraded or self.eof:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgraded = True
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise ProtocolError(400, str(e)) from None
        except httptools.HttpParserError as e:
            raise ProtocolError(400, str(e) or "malformed HTTP/1.1") from None
        if self._in_head:  # a head arriving in pieces: bound what httptools buffers meanwhile
            self._fed_in_head += len(data)
            if self._fed_in_head > 2 * MAX_HEAD:
                raise ProtocolError(431, "request header fields too large")

    def next_event(self) -> Event:
        return self._events.popleft() if self._events else (CLOSED if self.eof and not self._in_message else NEED_DATA)

    @property
    def idle(self) -> bool:
        """Between messages with nothing parsed ahead: the connection can carry another."""
        return not self._in_message and not self._events and not self.upgraded and not self.eof

    def _feed_eof(self) -> None:
        if self.eof:
            return
        self.eof = True
        if self._in_message:
            if self._until_close and not self._in_head:
                self._in_message = False
                self._events.append(END)
            else:
                raise ProtocolError(400, "connection closed in the middle of a message")

    # --- llhttp's callbacks (httptools calls them from feed_data) -----------------------------

    def on_message_begin(self) -> None:
        self._target = []
        self._headers = []
        self._head_size = 0
        self._fed_in_head = 0
        self._in_head = self._in_message = True
        self._until_close = False

    def on_url(self, url: bytes) -> None:
        self._target.append(url)
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # else a trailer of a chunked body: dropped
            self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))
            self._grow(len(name) + len(value) + 4)

    def _grow(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            raise ProtocolError(431, "request header fields too large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        version, keep_alive = parser.get_http_version(), parser.should_keep_alive()
        if self._responses:
            status = parser.get_status_code()
            framed = any(k in ("content-length", "transfer-encoding") for k, _ in self._headers)
            self._until_close = not framed and status >= 200 and status not in (204, 304)
            self._events.append(ResponseHead(status, self._headers, version, keep_alive))
            return
        target = b"".join(self._target).decode("latin-1")
        expect = any(k == "expect" and v.lower() == "100-continue" for k, v in self._headers)
        method = parser.get_method().decode("ascii")
        self._events.append(RequestHead(method, target, self._headers, version, keep_alive, expect))

    def on_body(self, body: bytes) -> None:
        self._events.append(body)

    def on_message_complete(self) -> None:
        self._in_message = self._in_head = False
        self._events.append(END)


# --- writing ---------------------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELDS = rf"(?:{_TOKEN}:[ \t]*[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*\r\n"
_REQUEST_HEAD = re.compile(rf"{_TOKEN} [^\x00-\x20\x7f]+ HTTP/1\.1\r\n{_FIELDS}")
_RESPONSE_HEAD = re.compile(rf"HTTP/1\.1 [1-5][0-9][0-9] [^\x00-\x08\x0a-\x1f\x7f]*\r\n{_FIELDS}")
LAST_CHUNK = b"0\r\n\r\n"


class HeadError(ValueError):
    """A head that would not be valid HTTP/1.1 (a CR or LF in a value, a bad name): never sent."""


def _fields(headers: list[tuple[str, str]]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers)


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """`METHOD target HTTP/1.1` and the headers, as bytes; HeadError if any part is invalid."""
    head = f"{method} {target} HTTP/1.1\r\n{_fields(headers)}\r\n"
    # One line per header plus the first and the last: a line break inside any part adds a
    # line, so a value cannot smuggle in a header (the grammar alone would accept it).
    if head.count("\n") != len(headers) + 2 or _REQUEST_HEAD.fullmatch(head) is None:
        raise HeadError(f"invalid HTTP/1.1 request head for {method} {target[:100]!r}")
    return _encode(head)


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """The status line (with the standard reason phrase) and the headers, as bytes."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    head = f"HTTP/1.1 {status} {reason}\r\n{_fields(headers)}\r\n"
    if head.count("\n") != len(headers) + 2 or _RESPONSE_HEAD.fullmatch(head) is None:
        raise HeadError(f"invalid HTTP/1.1 response head for status {status}")
    return _encode(head)


def _encode(head: str) -> bytes:
    try:
        return head.encode("latin-1")
    except UnicodeEncodeError:
        raise HeadError("a header value is not ISO-8859-1 (HTTP/1.1 field values are bytes)") from None


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (`data` not empty: an empty chunk ends the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def body_allowed(status: int, request_method: str) -> bool:
    """RFC 9110 §6.4.1: no body in answers to HEAD, in 1xx, 204 and 304."""
    return request_method != "HEAD" and status >= 200 and status not in (204, 304)
