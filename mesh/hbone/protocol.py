"""HBONE's sans-IO core: TCP streams tunnelled as HTTP/2 CONNECT streams (DESIGN §8).

`ClientConnection` opens CONNECT streams; `ServerConnection` surfaces them as `StreamOpened` and
answers 200 or a refusal. Both take bytes in (`receive_data`) and give bytes out
(`data_to_send`) and typed events (events.py); neither touches a socket. HTTP/2 framing, HPACK
and the RFC 9113 stream states come from the `h2` package; this layer adds what HBONE needs:

- the settings ztunnel uses (istio-ambient-protocols §6): 1 MiB frames, a 4 MiB window per
  stream, 16 MiB per connection, at most 100 concurrent streams;
- flow control that keeps one slow stream from stalling the others
  (linux-dataplane-and-performance, Lessons 4): a stream's window is reopened only as its
  consumer drains it (`acknowledge`), while the connection window is reopened as bytes arrive,
  so a stalled stream holds at most its own 4 MiB and never the shared connection;
- outbound queues per stream, sent as windows allow, several small writes joined into one frame
  (the cost is per frame, not per byte: Lessons 2);
- the HBONE request rules: only CONNECT to `host:port`, answered 200, 400, 401 or 503.

The shared machinery lives in core.py, the per-stream state in stream_state.py. Importing this
module replaces hyperframe's `Frame.__repr__` (see `install_cheap_frame_repr`).
"""

from __future__ import annotations

from collections.abc import Iterable

import h2.events as h2e
import h2.exceptions
from h2.errors import ErrorCodes

from .core import (
    CONNECTION_WINDOW,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    STREAM_WINDOW,
    HboneConnection,
)
from .events import (
    Event,
    HboneProtocolError,
    RequestRefused,
    StreamAccepted,
    StreamLimitError,
    StreamOpened,
    StreamRejected,
)
from .frames import install_cheap_frame_repr, split_headers
from .headers import AuthorityError, parse_authority
from .stream_state import Op, Phase

__all__ = [
    "CONNECTION_WINDOW",
    "MAX_CONCURRENT_STREAMS",
    "MAX_FRAME_SIZE",
    "STREAM_WINDOW",
    "ClientConnection",
    "ServerConnection",
    "install_cheap_frame_repr",
]


class ClientConnection(HboneConnection):
    """The connecting side: opens CONNECT streams and learns their answers."""

    def __init__(self) -> None:
        super().__init__(client_side=True)
        self._handlers[h2e.ResponseReceived] = self._on_response

    @property
    def stream_limit(self) -> int:
        """Concurrent streams allowed here: the peer's SETTINGS_MAX_CONCURRENT_STREAMS, at most 100."""
        return min(MAX_CONCURRENT_STREAMS, self._h2.remote_settings.max_concurrent_streams)

    @property
    def available_streams(self) -> int:
        """How many more streams may be opened now (0 once a GOAWAY was sent or received)."""
        return max(0, self.stream_limit - len(self._streams)) if self.accepting else 0

    def open_stream(self, authority: str, headers: Iterable[tuple[str, str]] = ()) -> int:
        """Send `CONNECT authority` with extra `headers` (`forwarded`, `baggage`...); return the
        stream id. The answer arrives as StreamAccepted or StreamRejected."""
        if not self.accepting:
            raise HboneProtocolError("the connection is going away; open a new one", ErrorCodes.REFUSED_STREAM)
        try:
            parse_authority(authority)
        except AuthorityError as e:
            raise HboneProtocolError(str(e)) from None
        if not self.available_streams:
            raise StreamLimitError(self.stream_limit)
        stream_id = self._h2.get_next_available_stream_id()
        request = [(":method", "CONNECT"), (":authority", authority), *headers]
        try:
            self._h2.send_headers(stream_id, request)
        except h2.exceptions.ProtocolError as e:
            raise HboneProtocolError(f"cannot send CONNECT {authority}: {e}") from None
        self._new_stream(stream_id, Phase.REQUESTED)
        return stream_id

    def _on_response(self, event: h2e.ResponseReceived, out: list[Event]) -> None:
        stream = self._streams.get(event.stream_id)  # type: ignore[arg-type]
        if stream is None:
            return
        pseudo, headers = split_headers(event.headers or ())  # type: ignore[arg-type]
        status = int(pseudo.get(":status", "0"))
        if 200 <= status < 300:  # RFC 9110 §9.3.6: any 2xx means the tunnel is up
            self._transition(stream.stream_id, Op.ANSWERED_OK)
            out.append(StreamAccepted(stream_id=stream.stream_id, status=status, headers=headers))
            return
        self._transition(stream.stream_id, Op.ANSWERED_REFUSAL)
        # Our request side is still open: abort it, unless the server's RST already closed it.
        self._reset_quietly(stream.stream_id, ErrorCodes.CANCEL)
        out.append(StreamRejected(stream_id=stream.stream_id, status=status, headers=headers))
        self._forget(stream.stream_id, out)


class ServerConnection(HboneConnection):
    """The accepting side: surfaces CONNECT requests and lets the caller answer them."""

    def __init__(self) -> None:
        super().__init__(client_side=False)
        self._handlers[h2e.RequestReceived] = self._on_request

    def accept(self, stream_id: int, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer 200: the upstream is connected and bytes may flow."""
        self._transition(stream_id, Op.ACCEPT)
        self._h2.send_headers(stream_id, [(":status", "200"), *headers])

    def reject(self, stream_id: int, status: int, headers: Iterable[tuple[str, str]] = ()) -> list[Event]:
        """Answer with a refusal: 400 bad request, 401 denied by policy, 503 no upstream."""
        if not 400 <= status <= 599:
            raise ValueError(f"a refusal is a 4xx or 5xx status, not {status}")
        self._transition(stream_id, Op.REJECT)
        self._answer_and_abort(stream_id, status, headers)
        out: list[Event] = []
        self._forget(stream_id, out)
        return out

    def _answer_and_abort(self, stream_id: int, status: int, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._h2.send_headers(stream_id, [(":status", str(status)), *headers], end_stream=True)
        # RFC 9113 §8.1: after a complete response the server may stop the request side with
        # RST_STREAM(NO_ERROR), so the client need not keep sending into a refused tunnel.
        self._reset_quietly(stream_id, ErrorCodes.NO_ERROR)

    def _on_request(self, event: h2e.RequestReceived, out: list[Event]) -> None:
        stream_id: int = event.stream_id  # type: ignore[assignment]
        pseudo, headers = split_headers(event.headers or ())  # type: ignore[arg-type]
        if not self.accepting:
            # Draining: RFC 9113 §8.7, REFUSED_STREAM tells the client it may retry elsewhere.
            self._reset_quietly(stream_id, ErrorCodes.REFUSED_STREAM)
            out.append(RequestRefused(stream_id=stream_id, status=None, reason="draining"))
            return
        problem = self._request_problem(pseudo)
        if problem is not None:
            self._answer_and_abort(stream_id, 400)
            out.append(RequestRefused(stream_id=stream_id, status=400, reason=problem))
            return
        self._new_stream(stream_id, Phase.REQUESTED)
        out.append(StreamOpened(stream_id=stream_id, authority=pseudo[":authority"], headers=headers))

    @staticmethod
    def _request_problem(pseudo: dict[str, str]) -> str | None:
        """Why a request is not an HBONE CONNECT (answered 400, istio-ambient-protocols §6)."""
        method = pseudo.get(":method")
        if method != "CONNECT":
            return f"method {method} is not CONNECT"
        if ":protocol" in pseudo:
            return "extended CONNECT (RFC 8441) is not HBONE"
        try:
            parse_authority(pseudo.get(":authority", ""))
        except AuthorityError as e:
            return str(e)
        return None
