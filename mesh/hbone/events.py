"""The events HBONE's sans-IO core hands back, and the errors it raises.

Every event is a frozen, keyword-only dataclass (the `h2` package's habit, kept stricter): the
driver matches on the type and reads documented fields; nothing here refers to a socket.
"""

from __future__ import annotations

from dataclasses import dataclass

from h2.errors import ErrorCodes

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamOpened:
    """Server side: a valid CONNECT arrived; answer it with `accept` or `reject`.

    `authority` is the `:authority` pseudo-header (`ip:port` for a direct hop, `VIP:port` through
    a waypoint, `hostname:port` for double HBONE); `headers` are the regular header fields
    (`forwarded`, `baggage`, `traceparent`, ...) in arrival order, names lowercase.
    """

    stream_id: int
    authority: str
    headers: Headers


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestRefused:
    """Server side: a request the core answered by itself, never shown as `StreamOpened`.

    HBONE carries only CONNECT to `host:port`; anything else gets 400 (istio-ambient-protocols
    §6, "Inbound on 15008"). While draining, new streams get RST_STREAM(REFUSED_STREAM) and
    `status` is None. The event exists so the caller can log and count it.
    """

    stream_id: int
    status: int | None
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamAccepted:
    """Client side: the server answered the CONNECT with a 2xx; data may flow both ways."""

    stream_id: int
    status: int
    headers: Headers


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamRejected:
    """Client side: the server refused the CONNECT (400 bad request, 401 denied by policy, 503
    no upstream). The stream is finished; nothing more is reported for it."""

    stream_id: int
    status: int
    headers: Headers


@dataclass(frozen=True, kw_only=True, slots=True)
class DataReceived:
    """Bytes of the tunnelled TCP stream. The consumer must call `acknowledge(stream_id, n)` as it
    drains them: that, and only that, reopens this stream's window (per-stream back-pressure)."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamEnded:
    """The peer half-closed the stream (END_STREAM): the TCP FIN of the far side. Data can still
    be sent the other way until this side ends too."""

    stream_id: int


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamReset:
    """The stream was aborted by RST_STREAM, sent by the peer (`remote`) or by this side. Also
    reported, with REFUSED_STREAM, for streams a GOAWAY said the server never processed (safe to
    retry on another connection)."""

    stream_id: int
    error_code: int
    remote: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamClosed:
    """Both directions of the stream are finished (ended, reset or rejected); its slot on the
    connection is free again. Always the last event of a stream."""

    stream_id: int


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowUpdated:
    """Queued outbound data of this stream went out, because the peer opened a window: a writer
    waiting on `buffered(stream_id)` may continue."""

    stream_id: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionClosed:
    """The connection is over: GOAWAY received (`remote`), GOAWAY sent (after a protocol error,
    or once a graceful drain finished), or the transport was lost. Every stream has been reported
    reset or closed before this; nothing follows it.

    `last_stream_id` is the highest stream the sender of the GOAWAY processed; streams above it
    were reset with REFUSED_STREAM. `reason` is a human explanation for the log.
    """

    error_code: int
    last_stream_id: int
    remote: bool
    reason: str


Event = (
    StreamOpened
    | RequestRefused
    | StreamAccepted
    | StreamRejected
    | DataReceived
    | StreamEnded
    | StreamReset
    | StreamClosed
    | WindowUpdated
    | ConnectionClosed
)


class HboneProtocolError(Exception):
    """A misuse of the core or a protocol violation; `error_code` is the HTTP/2 code that goes on
    the wire (RFC 9113 §7) when it ends a stream or the connection."""

    def __init__(self, message: str, error_code: int = ErrorCodes.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.error_code = error_code


class StreamStateError(HboneProtocolError):
    """An operation the stream's phase does not allow (e.g. data before the CONNECT was accepted,
    or a second answer to one request)."""

    def __init__(self, stream_id: int, phase: str, operation: str) -> None:
        super().__init__(f"stream {stream_id}: cannot {operation} while {phase}", ErrorCodes.STREAM_CLOSED)
        self.stream_id = stream_id
        self.phase = phase
        self.operation = operation


class StreamLimitError(HboneProtocolError):
    """The connection already carries as many streams as the peer allows; open another one."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the peer allows at most {limit} concurrent streams", ErrorCodes.REFUSED_STREAM)
        self.limit = limit
