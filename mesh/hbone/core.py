"""What HBONE's client and server cores share (protocol.py): the settings, the frame-repr
override, event translation from h2, flow control and the per-stream send queues.

Importing this module replaces hyperframe's `Frame.__repr__` (see `install_cheap_frame_repr`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import suppress

import h2.config
import h2.connection
import h2.events as h2e
import h2.exceptions
import hyperframe.frame
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from .events import (
    ConnectionClosed,
    DataReceived,
    Event,
    StreamClosed,
    StreamEnded,
    StreamReset,
    StreamStateError,
    WindowUpdated,
)
from .stream_state import TRANSITIONS, Op, Phase, StreamState

MAX_FRAME_SIZE = 1 << 20  # SETTINGS_MAX_FRAME_SIZE, as ztunnel
STREAM_WINDOW = 4 << 20  # SETTINGS_INITIAL_WINDOW_SIZE
CONNECTION_WINDOW = 16 << 20  # raised by WINDOW_UPDATE on stream 0 (RFC 9113 §6.9.2)
MAX_CONCURRENT_STREAMS = 100
_RFC_INITIAL_WINDOW = 65_535  # every window's size before SETTINGS or WINDOW_UPDATE change it
# Windows are given back in quarter steps: often enough that a sender keeping up never waits for
# an update, rarely enough that WINDOW_UPDATE frames stay a small fraction of all frames.
_STREAM_CREDIT_STEP = STREAM_WINDOW // 4
_CONNECTION_CREDIT_STEP = CONNECTION_WINDOW // 4


def _cheap_frame_repr(frame: hyperframe.frame.Frame) -> str:
    return f"{type(frame).__name__}(stream_id={frame.stream_id})"


def install_cheap_frame_repr() -> None:
    """Make `repr()` of every hyperframe frame cheap (type and stream id only).

    A performance measure: h2 formats `repr(frame)` for a trace-log call on every frame it
    receives, even with logging off, and a DATA frame's repr hex-encodes its payload. Replacing
    it raised HBONE bulk throughput by 29 % (16 KiB frames) to 49 % (1 MiB frames) with latency
    unchanged (linux-dataplane-and-performance.md, Lessons 1). Process-wide and idempotent.
    """
    hyperframe.frame.Frame.__repr__ = _cheap_frame_repr  # type: ignore[method-assign]


install_cheap_frame_repr()


def split_headers(headers: Iterable[tuple[str, str]]) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    pseudo: dict[str, str] = {}
    regular: list[tuple[str, str]] = []
    for name, value in headers:
        if name.startswith(":"):
            pseudo[name] = value
        else:
            regular.append((name, value))
    return pseudo, tuple(regular)


class HboneConnection:
    """What client and server share: settings, event translation, flow control, send queues."""

    def __init__(self, *, client_side: bool) -> None:
        config = h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8")
        self._h2 = h2.connection.H2Connection(config)
        self._streams: dict[int, StreamState] = {}
        self._uncredited = 0  # connection-level bytes received but not yet returned
        self._closed = False  # no more input is processed
        self.accepting = True  # False once closing: no new streams
        self._goaway_reason = ""
        handlers: dict[type, Callable[[h2e.Event, list[Event]], None]] = {
            h2e.DataReceived: self._on_data,
            h2e.StreamEnded: self._on_stream_ended,
            h2e.StreamReset: self._on_stream_reset,
            h2e.WindowUpdated: self._on_window_updated,
            h2e.RemoteSettingsChanged: self._on_settings_changed,
            h2e.ConnectionTerminated: self._on_terminated,
        }
        self._handlers = handlers
        self._h2.initiate_connection()
        settings = {
            SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
        }
        if client_side:
            settings[SettingCodes.ENABLE_PUSH] = 0  # RFC 9113 §6.5.2: only a client may say so
        # Applied when the peer acknowledges them (RFC 9113 §6.5.3), which it does before it
        # sends anything that relies on them.
        self._h2.update_settings(settings)
        self._h2.increment_flow_control_window(CONNECTION_WINDOW - _RFC_INITIAL_WINDOW)

    # -- bytes in, bytes out ------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the connection; return what they meant, in order."""
        if self._closed:
            return []
        try:
            h2_events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            # h2 has already queued a GOAWAY with the error code (RFC 9113 §5.4.1).
            return self._fail(int(e.error_code), remote=False, reason=f"protocol error: {e}")
        out: list[Event] = []
        handlers = self._handlers
        for event in h2_events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event, out)
        return out

    def data_to_send(self) -> bytes:
        """Bytes to write to the connection now (possibly empty)."""
        return self._h2.data_to_send()

    def connection_lost(self, reason: str = "connection lost") -> list[Event]:
        """The transport is gone: every stream is reset and the connection closed."""
        if self._closed:
            return []
        return self._fail(int(ErrorCodes.CANCEL), remote=True, reason=reason)

    def close(self, error_code: int = ErrorCodes.NO_ERROR, reason: str = "") -> list[Event]:
        """Stop taking new streams, then send GOAWAY.

        With NO_ERROR this is a graceful drain: open streams finish, new CONNECTs are refused
        with RST_STREAM(REFUSED_STREAM) (retry-safe, RFC 9113 §8.7), and the GOAWAY goes out when
        the last stream closes (ConnectionClosed then follows). It cannot go out earlier: h2
        allows no frame at all after a GOAWAY (python-hyper/h2#1181). With any other code the
        GOAWAY goes out now and every stream is reset.
        """
        if self._closed:
            return []
        self.accepting = False
        self._goaway_reason = reason
        if error_code != ErrorCodes.NO_ERROR:
            self._h2.close_connection(error_code, additional_data=reason.encode()[:256] or None)
            return self._fail(int(error_code), remote=False, reason=reason or "closed")
        out: list[Event] = []
        self._goaway_if_drained(out)
        return out

    # -- per-stream operations ----------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        """Streams not yet closed at the HBONE layer (the pool's count of slots in use)."""
        return len(self._streams)

    def buffered(self, stream_id: int) -> int:
        """Bytes queued on `stream_id` that wait for window; 0 for an unknown stream."""
        stream = self._streams.get(stream_id)
        return stream.queued if stream is not None else 0

    def send_data(self, stream_id: int, data: bytes | memoryview) -> None:
        """Queue `data` on the stream and send what the windows allow now."""
        stream = self._transition(stream_id, Op.SEND)
        if stream.end_queued:
            raise StreamStateError(stream_id, "half-closed (local)", Op.SEND.value)
        if data:
            stream.outbox.append(data)
            stream.queued += len(data)
            self._flush(stream)

    def end_stream(self, stream_id: int) -> list[Event]:
        """Half-close: END_STREAM after the queued data (a TCP FIN, Lessons 6)."""
        stream = self._transition(stream_id, Op.END)
        if stream.end_queued:
            return []
        stream.end_queued = True
        self._flush(stream)
        out: list[Event] = []
        self._maybe_finish(stream, out)
        return out

    def acknowledge(self, stream_id: int, size: int) -> None:
        """The consumer drained `size` bytes of the stream: give that much window back."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._credit_stream(stream, size)

    def reset_stream(self, stream_id: int, error_code: int = ErrorCodes.CANCEL) -> list[Event]:
        """Abort the stream with RST_STREAM; queued data is dropped."""
        if stream_id not in self._streams:
            return []
        self._reset_quietly(stream_id, error_code)
        out: list[Event] = [StreamReset(stream_id=stream_id, error_code=int(error_code), remote=False)]
        self._forget(stream_id, out)
        return out

    # -- internals: phases, flow control, queues -----------------------------------------------

    def _transition(self, stream_id: int, op: Op) -> StreamState:
        stream = self._streams.get(stream_id)
        phase = stream.phase if stream is not None else Phase.CLOSED
        following = TRANSITIONS.get((phase, op))
        if stream is None or following is None:
            raise StreamStateError(stream_id, phase.value, op.value)
        stream.phase = following
        return stream

    def _reset_quietly(self, stream_id: int, error_code: int) -> None:
        # Already closed by the peer: nothing to abort.
        with suppress(h2.exceptions.StreamClosedError):
            self._h2.reset_stream(stream_id, error_code)

    def _credit_stream(self, stream: StreamState, size: int) -> None:
        if stream.remote_ended:
            return  # the peer sends no more on this stream; its window no longer matters
        stream.uncredited += size
        if stream.uncredited >= _STREAM_CREDIT_STEP:
            credit, stream.uncredited = stream.uncredited, 0
            # The stream may have closed underneath: then there is no window to give back.
            with suppress(KeyError, h2.exceptions.ProtocolError):
                self._h2.increment_flow_control_window(credit, stream.stream_id)

    def _flush(self, stream: StreamState, max_frames: int = 1 << 30) -> bool:
        """Send queued data (and a queued END_STREAM) while both windows allow; True if anything
        went out."""
        conn, sid = self._h2, stream.stream_id
        sent = False
        while stream.outbox and max_frames:
            window = conn.local_flow_control_window(sid)
            if window <= 0:
                break
            chunk = stream.take(min(window, conn.max_outbound_frame_size))
            stream.queued -= len(chunk)
            last = stream.end_queued and not stream.outbox
            conn.send_data(sid, chunk, end_stream=last)
            stream.local_ended = stream.local_ended or last
            sent = True
            max_frames -= 1
        if stream.end_queued and not stream.outbox and not stream.local_ended:
            conn.end_stream(sid)
            stream.local_ended = sent = True
        return sent

    def _flush_all(self, out: list[Event]) -> None:
        """After a window opened: round-robin one frame per stream, so one bulk stream cannot
        take the whole connection window from the others."""
        waiting = [s for s in self._streams.values() if s.outbox or (s.end_queued and not s.local_ended)]
        progressed: dict[int, StreamState] = {}
        while waiting:
            moved = [s for s in waiting if self._flush(s, max_frames=1)]
            progressed.update((s.stream_id, s) for s in moved)
            waiting = [s for s in moved if s.outbox]
        for stream in progressed.values():
            out.append(WindowUpdated(stream_id=stream.stream_id))
            self._maybe_finish(stream, out)

    def _maybe_finish(self, stream: StreamState, out: list[Event]) -> None:
        if stream.local_ended and stream.remote_ended:
            self._forget(stream.stream_id, out)

    def _forget(self, stream_id: int, out: list[Event]) -> None:
        """The stream is over: free its slot and, when draining, send GOAWAY after the last."""
        if self._streams.pop(stream_id, None) is not None:
            out.append(StreamClosed(stream_id=stream_id))
            self._goaway_if_drained(out)

    def _goaway_if_drained(self, out: list[Event]) -> None:
        if self.accepting or self._closed or self._streams:
            return
        self._closed = True
        self._h2.close_connection(ErrorCodes.NO_ERROR, additional_data=self._goaway_reason.encode()[:256] or None)
        last = self._h2.highest_inbound_stream_id
        out.append(ConnectionClosed(error_code=0, last_stream_id=last, remote=False, reason=self._goaway_reason))

    def _fail(self, error_code: int, *, remote: bool, reason: str) -> list[Event]:
        self._closed = True
        self.accepting = False
        out: list[Event] = []
        for stream_id in list(self._streams):
            out.append(StreamReset(stream_id=stream_id, error_code=error_code, remote=remote))
            out.append(StreamClosed(stream_id=stream_id))
        self._streams.clear()
        last = self._h2.highest_inbound_stream_id
        out.append(ConnectionClosed(error_code=error_code, last_stream_id=last, remote=remote, reason=reason))
        return out

    # -- h2 event handlers ----------------------------------------------------------------------

    def _on_data(self, event: h2e.DataReceived, out: list[Event]) -> None:
        size = event.flow_controlled_length or 0
        self._uncredited += size
        if self._uncredited >= _CONNECTION_CREDIT_STEP and not self._closed:
            credit, self._uncredited = self._uncredited, 0
            self._h2.increment_flow_control_window(credit)
        stream = self._streams.get(event.stream_id)  # type: ignore[arg-type]
        if stream is None:
            return  # a refused or reset stream's late data: only the connection window matters
        data = event.data or b""
        if size > len(data):
            self._credit_stream(stream, size - len(data))  # padding is nobody's to consume
        if data:
            out.append(DataReceived(stream_id=stream.stream_id, data=data))

    def _on_stream_ended(self, event: h2e.StreamEnded, out: list[Event]) -> None:
        stream = self._streams.get(event.stream_id)  # type: ignore[arg-type]
        if stream is not None:
            stream.remote_ended = True
            out.append(StreamEnded(stream_id=stream.stream_id))
            self._maybe_finish(stream, out)

    def _on_stream_reset(self, event: h2e.StreamReset, out: list[Event]) -> None:
        stream_id: int = event.stream_id  # type: ignore[assignment]
        if stream_id in self._streams:
            out.append(StreamReset(stream_id=stream_id, error_code=int(event.error_code or 0), remote=True))
            self._forget(stream_id, out)

    def _on_window_updated(self, event: h2e.WindowUpdated, out: list[Event]) -> None:
        if event.stream_id:
            stream = self._streams.get(event.stream_id)
            if stream is not None and self._flush(stream):
                out.append(WindowUpdated(stream_id=stream.stream_id))
                self._maybe_finish(stream, out)
        else:
            self._flush_all(out)

    def _on_settings_changed(self, event: h2e.RemoteSettingsChanged, out: list[Event]) -> None:
        if {SettingCodes.INITIAL_WINDOW_SIZE, SettingCodes.MAX_FRAME_SIZE} & set(event.changed_settings):
            self._flush_all(out)

    def _on_terminated(self, event: h2e.ConnectionTerminated, out: list[Event]) -> None:
        """GOAWAY received (RFC 9113 §6.8). Streams above `last_stream_id` were never processed:
        REFUSED_STREAM, safe to retry elsewhere. The others would be allowed to finish, but h2
        closes the connection on any GOAWAY (python-hyper/h2#1181), so they end now with the
        GOAWAY's code; this mesh's own peers send GOAWAY only once drained (see `close`)."""
        code, last = int(event.error_code or 0), event.last_stream_id or 0
        self._closed = True
        self.accepting = False
        for stream_id in list(self._streams):
            unprocessed = stream_id > last and self._is_outbound(stream_id)
            stream_code = int(ErrorCodes.REFUSED_STREAM) if unprocessed else code
            out.append(StreamReset(stream_id=stream_id, error_code=stream_code, remote=True))
            out.append(StreamClosed(stream_id=stream_id))
        self._streams.clear()
        reason = (event.additional_data or b"").decode("utf-8", "replace") or f"GOAWAY {ErrorCodes(code).name}"
        out.append(ConnectionClosed(error_code=code, last_stream_id=last, remote=True, reason=reason))

    def _is_outbound(self, stream_id: int) -> bool:
        return stream_id % 2 == int(self._h2.config.client_side)
