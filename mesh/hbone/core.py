"""What HBONE's client and server cores share (protocol.py): the settings, event translation
from h2, flow control and the per-stream send queues (byte-level framing is in frames.py).

The DATA path bypasses h2. Each DATA frame through h2 cost about 10 µs to send and 12 µs to
receive (hyperframe objects, h2's stream state machine, its window bookkeeping): with four
frames per proxied request, a tenth of the waypoint's CPU. So `receive_data` splits the input
into frames itself: DATA for an open stream and WINDOW_UPDATE for the connection or an open
stream are handled here (windows checked, padding stripped, FLOW_CONTROL_ERROR and
PROTOCOL_ERROR as RFC 9113 §6.1, §6.9 say), everything else goes to h2 in order, as complete
frames. Outbound DATA frames and WINDOW_UPDATEs are written here too, so both directions'
windows are tracked here and h2's are left alone (a window h2 saw only half of would overflow).
h2 still learns of each stream's end: a received END_STREAM is handed to it as an empty DATA
frame, and a stream's own end goes out through `h2.end_stream`.

Importing this module replaces hyperframe's `Frame.__repr__` (see `frames.install_cheap_frame_repr`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import suppress

import h2.config
import h2.connection
import h2.events as h2e
import h2.exceptions
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
from .frames import (
    DATA,
    END_HEADERS,
    END_STREAM,
    FRAME_HEADER,
    HEADERS,
    PADDED,
    PUSH_PROMISE,
    WINDOW_UPDATE,
    frame_header,
    install_cheap_frame_repr,
    join_small_runs,
)
from .stream_state import TRANSITIONS, Op, Phase, StreamState

install_cheap_frame_repr()

MAX_FRAME_SIZE = 1 << 20  # SETTINGS_MAX_FRAME_SIZE, as ztunnel
STREAM_WINDOW = 4 << 20  # SETTINGS_INITIAL_WINDOW_SIZE
CONNECTION_WINDOW = 16 << 20  # raised by WINDOW_UPDATE on stream 0 (RFC 9113 §6.9.2)
MAX_CONCURRENT_STREAMS = 100
_RFC_INITIAL_WINDOW = 65_535  # every window's size before SETTINGS or WINDOW_UPDATE change it
# Windows are given back in quarter steps: often enough that a sender keeping up never waits for
# an update, rarely enough that WINDOW_UPDATE frames stay a small fraction of all frames.
_STREAM_CREDIT_STEP = STREAM_WINDOW // 4
_CONNECTION_CREDIT_STEP = CONNECTION_WINDOW // 4
_MAX_WINDOW = 2**31 - 1  # RFC 9113 §6.9.1
_JOIN_BELOW = 16 << 10  # pieces smaller than a TLS record are joined before writing
_PREFACE_SIZE = 24  # "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", which only a server receives


class HboneConnection:
    """What client and server share: settings, event translation, flow control, send queues."""

    def __init__(self, *, client_side: bool) -> None:
        config = h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8")
        self._h2 = h2.connection.H2Connection(config)
        self._streams: dict[int, StreamState] = {}
        self._uncredited = 0  # connection-level bytes received here but not yet returned
        self._uncredited_h2 = 0  # the same for DATA h2 saw (late frames of closed streams)
        self._send_window = _RFC_INITIAL_WINDOW  # connection-level: what the peer lets us send
        self._receive_window = CONNECTION_WINDOW  # connection-level: what we let the peer send
        self._inbox = bytearray()  # received bytes not yet a whole frame
        self._data_stream: StreamState | None = None  # whose DATA frame is arriving (see _start_data)
        self._data_left = 0  # payload bytes of that frame still to come
        self._data_ends = False  # and whether it carries END_STREAM
        self._out: list[bytes | memoryview] = []  # frames written here, after h2's earlier output
        self._preface_left = 0 if client_side else _PREFACE_SIZE
        self._in_header_block = False  # a HEADERS without END_HEADERS awaits its CONTINUATIONs
        self._closed = False  # no more input is processed
        self.accepting = True  # False once closing: no new streams
        self._goaway_reason = ""
        handlers: dict[type, Callable[[h2e.Event, list[Event]], None]] = {
            h2e.DataReceived: self._on_data,
            h2e.StreamEnded: self._on_stream_ended,
            h2e.StreamReset: self._on_stream_reset,
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

    def receive_data(self, data: bytes | memoryview) -> list[Event]:
        """Feed bytes read from the connection; return what they meant, in order.

        `data` is only read during the call (it may be the reader's reusable buffer). A DATA
        frame's payload is handed on as it arrives rather than once the whole frame is in: with
        1 MiB frames and 256 KiB reads, buffering whole frames cost two extra copies of every
        byte (measured as the receiving ztunnel's largest user-space cost under bulk).
        """
        out: list[Event] = []
        if self._closed:
            return out
        if self._data_left:
            taken = min(self._data_left, len(data))
            self._continue_data(data[:taken], out)
            if taken == len(data) or self._closed:
                return out
            data = data[taken:]
        inbox = self._inbox
        if inbox:
            inbox += data
            buf: bytes | bytearray | memoryview = inbox
        else:
            buf = data  # parsed in place; only an unfinished frame's bytes are kept
        size = len(buf)
        offset = batch = 0  # buf[batch:offset] is whole frames (or preface) h2 has yet to see
        if self._preface_left:
            offset = min(self._preface_left, size)
            self._preface_left -= offset
        while not self._preface_left and size - offset >= 9:
            high, low, kind, flags, stream_id = FRAME_HEADER.unpack_from(buf, offset)
            length = high << 8 | low
            end = offset + 9 + length
            if length > MAX_FRAME_SIZE:  # §4.2: larger than we announced
                if batch < offset:
                    self._feed_h2(bytes(buf[batch:offset]), out)
                if not self._closed:
                    out.extend(self._abort(ErrorCodes.FRAME_SIZE_ERROR, f"a frame of {length} bytes"))
                break
            stream_id &= 0x7FFFFFFF
            if end > size:
                if kind == DATA and not self._in_header_block and not flags & PADDED:
                    stream = self._streams.get(stream_id)
                    if stream is not None and not stream.remote_ended:
                        if batch < offset:  # what came before, in order (it may end this stream)
                            self._feed_h2(bytes(buf[batch:offset]), out)
                            batch = offset
                            stream = self._streams.get(stream_id)
                        if stream is not None and not stream.remote_ended and not self._closed:
                            self._start_data(stream, flags, length, buf[offset + 9 : size], out)
                            batch = offset = size
                break
            if self._in_header_block or kind in (HEADERS, PUSH_PROMISE):
                # Nothing may come between a header block's frames (§6.10): h2 checks that.
                self._in_header_block = not flags & END_HEADERS
            elif kind == DATA or (kind == WINDOW_UPDATE and length == 4):
                stream = self._streams.get(stream_id)
                if stream_id == 0 or stream is not None:
                    if batch < offset:  # what came before, in order (it may end this stream)
                        self._feed_h2(bytes(buf[batch:offset]), out)
                        stream = self._streams.get(stream_id)
                    batch = end
                    if self._closed:
                        break
                    if kind == WINDOW_UPDATE:
                        self._on_window_update(stream_id, stream, buf, offset + 9, out)
                    elif stream is not None and not stream.remote_ended:
                        self._on_data_frame(stream, flags, buf, offset + 9, length, out)
                    else:  # DATA on stream 0 or a stream its peer ended: h2 raises the error
                        batch = offset
            offset = end
        if not self._closed and batch < offset:
            self._feed_h2(bytes(buf[batch:offset]), out)
        if self._closed:
            inbox.clear()
        elif buf is inbox:
            del inbox[:offset]
        elif offset < size:
            inbox += buf[offset:]
        return out

    def _start_data(
        self, stream: StreamState, flags: int, length: int, payload: bytes | bytearray | memoryview, out: list[Event]
    ) -> None:
        """A DATA frame whose payload is still arriving: windows are charged for all of it now,
        `payload` (its first bytes) is delivered, the rest by `_continue_data`."""
        if not self._charge_windows(stream, length, out):
            return
        self._data_stream = stream
        self._data_left = length
        self._data_ends = bool(flags & END_STREAM)
        self._continue_data(payload, out)

    def _continue_data(self, payload: bytes | bytearray | memoryview, out: list[Event]) -> None:
        """More of the DATA frame in progress; at its end, its END_STREAM (if set) takes effect.
        Bytes for a stream reset meanwhile are dropped (the connection window was charged)."""
        stream = self._data_stream
        assert stream is not None
        self._data_left -= len(payload)
        live = self._streams.get(stream.stream_id) is stream
        if payload and live:
            out.append(DataReceived(stream_id=stream.stream_id, data=bytes(payload)))
        if not self._data_left:
            self._data_stream = None
            if self._data_ends and live:  # h2 keeps the stream states: tell it, without the payload
                self._feed_h2(frame_header(0, DATA, END_STREAM, stream.stream_id), out)

    def _feed_h2(self, data: bytes, out: list[Event]) -> None:
        """Hand whole frames to h2 and translate what it makes of them."""
        try:
            h2_events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            # h2 has already queued a GOAWAY with the error code (RFC 9113 §5.4.1).
            out.extend(self._fail(int(e.error_code), remote=False, reason=f"protocol error: {e}"))
            return
        handlers = self._handlers
        for event in h2_events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event, out)

    def data_to_send(self) -> bytes:
        """Bytes to write to the connection now (possibly empty), as one buffer."""
        pending = self._h2.data_to_send()
        if not self._out:
            return pending
        out, self._out = self._out, []
        return b"".join(out) + pending if pending else b"".join(out)

    def parts_to_send(self) -> list[bytes | memoryview]:
        """What `data_to_send` joins, in order, with runs of small pieces (frame headers, small
        frames) already joined and large payloads left alone: a writer that takes a list
        (`writelines`) then copies no bulk byte to join it."""
        pending = self._h2.data_to_send()
        out = self._out
        if not out:
            return [pending] if pending else []
        if pending:
            out.append(pending)
        self._out = []
        return join_small_runs(out, _JOIN_BELOW)

    def _emit(self, *parts: bytes | memoryview) -> None:
        """Queue frames written here after whatever h2 has queued so far (frame order is kept)."""
        pending = self._h2.data_to_send()
        if pending:
            self._out.append(pending)
        self._out.extend(parts)

    def _window_update(self, stream_id: int, increment: int) -> None:
        self._emit(frame_header(4, WINDOW_UPDATE, 0, stream_id) + increment.to_bytes(4, "big"))

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

    @property
    def send_window(self) -> int:
        """The connection-level window the peer granted: bytes we may send now on all streams."""
        return self._send_window

    def buffered(self, stream_id: int) -> int:
        """Bytes queued on `stream_id` that wait for window; 0 for an unknown stream."""
        stream = self._streams.get(stream_id)
        return stream.queued if stream is not None else 0

    def send_data(self, stream_id: int, data: bytes | memoryview) -> int:
        """Queue `data` on the stream and send what the windows allow now; return how many of
        the stream's bytes still wait for window (what `buffered` says)."""
        stream = self._transition(stream_id, Op.SEND)
        if stream.end_queued:
            raise StreamStateError(stream_id, "half-closed (local)", Op.SEND.value)
        size = len(data)
        if not size:
            return stream.queued
        if (
            not stream.outbox
            and size <= stream.send_window
            and size <= self._send_window
            and size <= self._h2.max_outbound_frame_size
        ):
            self._emit_data(stream, data)  # the common case: no queue to make and empty
            return 0
        if stream.outbox:
            stream.outbox.append(data)  # type: ignore[union-attr]
        else:
            stream.outbox = deque((data,))
        stream.queued += size
        self._flush(stream)
        return stream.queued

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

    def acknowledge(self, stream_id: int, size: int) -> bool:
        """The consumer drained `size` bytes of the stream: give that much window back. True if
        that queued a WINDOW_UPDATE (there is then something to send)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_ended:
            return False  # gone, or its peer sends no more: its window no longer matters
        stream.uncredited += size
        if stream.uncredited < _STREAM_CREDIT_STEP:
            return False
        credit, stream.uncredited = stream.uncredited, 0
        stream.receive_window += credit
        self._window_update(stream.stream_id, credit)
        return True

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

    def _flush(self, stream: StreamState, max_frames: int = 1 << 30) -> bool:
        """Send queued data (and a queued END_STREAM) while both windows allow; True if anything
        went out."""
        sid = stream.stream_id
        sent = False
        while stream.outbox and max_frames:
            window = min(self._send_window, stream.send_window)
            if window <= 0:
                break
            chunk = stream.take(min(window, self._h2.max_outbound_frame_size))
            stream.queued -= len(chunk)
            self._emit_data(stream, chunk)
            sent = True
            max_frames -= 1
        if stream.end_queued and not stream.outbox and not stream.local_ended:
            self._h2.end_stream(sid)  # an empty DATA with END_STREAM, so h2's stream state follows
            stream.local_ended = sent = True
        return sent

    def _emit_data(self, stream: StreamState, chunk: bytes | memoryview) -> None:
        """One DATA frame of `chunk`, charged to both send windows."""
        size = len(chunk)
        stream.send_window -= size
        self._send_window -= size
        self._emit(frame_header(size, DATA, 0, stream.stream_id), chunk)

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

    def _charge_windows(self, stream: StreamState, length: int, out: list[Event]) -> bool:
        """Count a DATA frame of `length` against both receive windows (RFC 9113 §6.9); False
        (and the connection aborted) if it does not fit."""
        if length > self._receive_window or length > stream.receive_window:
            out.extend(self._abort(ErrorCodes.FLOW_CONTROL_ERROR, "DATA beyond the flow-control window"))
            return False
        self._receive_window -= length
        stream.receive_window -= length
        # The connection window reopens as bytes arrive; the stream's only as they are consumed.
        self._uncredited += length
        if self._uncredited >= _CONNECTION_CREDIT_STEP:
            credit, self._uncredited = self._uncredited, 0
            self._receive_window += credit
            self._window_update(0, credit)
        return True

    def _on_data_frame(
        self,
        stream: StreamState,
        flags: int,
        frame: bytes | bytearray | memoryview,
        start: int,
        length: int,
        out: list[Event],
    ) -> None:
        """A whole DATA frame of an open stream (RFC 9113 §6.1), its payload at
        frame[start:start+length]."""
        if not self._charge_windows(stream, length, out):
            return
        if flags & PADDED:
            pad = frame[start] if length else 0
            if not length or pad >= length:
                out.extend(self._abort(ErrorCodes.PROTOCOL_ERROR, "DATA padding as long as the frame"))
                return
            data = bytes(frame[start + 1 : start + length - pad])
        else:
            data = bytes(frame[start : start + length])
        if length > len(data):
            self.acknowledge(stream.stream_id, length - len(data))  # padding is nobody's to consume
        if data:
            out.append(DataReceived(stream_id=stream.stream_id, data=data))
        if flags & END_STREAM:  # h2 keeps the stream states: tell it, without the payload
            self._feed_h2(frame_header(0, DATA, END_STREAM, stream.stream_id), out)

    def _on_window_update(
        self,
        stream_id: int,
        stream: StreamState | None,
        frame: bytes | bytearray | memoryview,
        start: int,
        out: list[Event],
    ) -> None:
        """WINDOW_UPDATE for the connection (stream 0) or an open stream (RFC 9113 §6.9)."""
        increment = int.from_bytes(frame[start : start + 4], "big") & 0x7FFFFFFF
        if stream is None:
            if stream_id:
                return  # the stream ended meanwhile
            if not increment:
                out.extend(self._abort(ErrorCodes.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 for the connection"))
            elif self._send_window + increment > _MAX_WINDOW:
                out.extend(self._abort(ErrorCodes.FLOW_CONTROL_ERROR, "connection window above 2^31-1"))
            else:
                self._send_window += increment
                self._flush_all(out)
            return
        if not increment or stream.send_window + increment > _MAX_WINDOW:
            code = ErrorCodes.PROTOCOL_ERROR if not increment else ErrorCodes.FLOW_CONTROL_ERROR
            out.extend(self.reset_stream(stream_id, code))
            return
        stream.send_window += increment
        if self._flush(stream):
            out.append(WindowUpdated(stream_id=stream_id))
            self._maybe_finish(stream, out)

    def _abort(self, error_code: int, reason: str) -> list[Event]:
        """A connection error found here: GOAWAY with `error_code`, every stream reset."""
        self._h2.close_connection(error_code, additional_data=reason.encode())
        return self._fail(int(error_code), remote=False, reason=reason)

    def _on_data(self, event: h2e.DataReceived, out: list[Event]) -> None:
        """DATA h2 saw: late frames of streams already over here (their connection window is
        given back through h2, whose window they used), and our own END_STREAM markers."""
        size = event.flow_controlled_length or 0
        self._uncredited_h2 += size
        if self._uncredited_h2 >= _CONNECTION_CREDIT_STEP and not self._closed:
            credit, self._uncredited_h2 = self._uncredited_h2, 0
            self._h2.increment_flow_control_window(credit)

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

    def _on_settings_changed(self, event: h2e.RemoteSettingsChanged, out: list[Event]) -> None:
        changed = event.changed_settings
        window = changed.get(SettingCodes.INITIAL_WINDOW_SIZE)
        if window is not None:  # RFC 9113 §6.9.2: every open stream's window moves by the change
            delta = window.new_value - window.original_value
            for stream in self._streams.values():
                stream.send_window += delta
                if stream.send_window > _MAX_WINDOW:
                    out.extend(self._abort(ErrorCodes.FLOW_CONTROL_ERROR, "stream window above 2^31-1"))
                    return
        if window is not None or SettingCodes.MAX_FRAME_SIZE in changed:
            self._flush_all(out)

    def _new_stream(self, stream_id: int, phase: Phase) -> StreamState:
        """Track a stream: its send window is the peer's current initial window."""
        stream = StreamState(stream_id, phase, self._h2.remote_settings.initial_window_size, STREAM_WINDOW)
        self._streams[stream_id] = stream
        return stream

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
