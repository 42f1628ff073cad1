"""HBONE's sans-IO core: two connection objects pumped into each other, no sockets."""

from __future__ import annotations

import hyperframe.frame
import pytest
from h2.errors import ErrorCodes

from mesh.hbone import events as ev
from mesh.hbone.protocol import (
    CONNECTION_WINDOW,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    STREAM_WINDOW,
    ClientConnection,
    ServerConnection,
)
from tests.unit.hbone.pump import Pair, pattern

pytestmark = pytest.mark.unit

MiB = 1 << 20


def test_settings_follow_ztunnel() -> None:
    pair = Pair()
    for side in (pair.client, pair.server):
        h2conn = side.core._h2
        # What this side announced, as the peer acknowledged it.
        assert h2conn.local_settings.max_frame_size == MAX_FRAME_SIZE == MiB
        assert h2conn.local_settings.initial_window_size == STREAM_WINDOW == 4 * MiB
        assert h2conn.local_settings.max_concurrent_streams == MAX_CONCURRENT_STREAMS == 100
        # What the peer granted: its settings, and 16 MiB for the whole connection.
        assert h2conn.remote_settings.max_frame_size == MiB
        assert side.core.send_window == CONNECTION_WINDOW == 16 * MiB
    assert pair.client.core._h2.local_settings.enable_push == 0


def test_frame_repr_is_cheap() -> None:
    frame = hyperframe.frame.DataFrame(1, data=b"x" * 100_000)
    assert repr(frame) == "DataFrame(stream_id=1)"


def test_open_carries_authority_and_headers() -> None:
    pair = Pair()
    headers = (("forwarded", 'for="10.0.0.1:4000"'), ("baggage", "k8s.namespace.name=default"))
    stream_id = pair.client.core.open_stream("10.0.0.2:8080", headers)
    pair.pump()
    assert pair.server.events == [ev.StreamOpened(stream_id=stream_id, authority="10.0.0.2:8080", headers=headers)]
    assert isinstance(pair.server.core, ServerConnection)
    pair.server.core.accept(stream_id, (("x-note", "ok"),))
    pair.pump()
    assert pair.client.events == [ev.StreamAccepted(stream_id=stream_id, status=200, headers=(("x-note", "ok"),))]


def test_data_both_ways_and_client_half_closes_first() -> None:
    pair = Pair()
    sid = pair.open()
    pair.client.core.send_data(sid, b"ping")
    pair.server.core.send_data(sid, b"pong")
    pair.pump()
    assert bytes(pair.server.received[sid]) == b"ping" and bytes(pair.client.received[sid]) == b"pong"
    assert pair.client.core.end_stream(sid) == []
    pair.pump()
    assert pair.server.of(ev.StreamEnded, sid) == [ev.StreamEnded(stream_id=sid)]
    # Half-closed: the server may still send, and the client still reads.
    pair.server.core.send_data(sid, b"after the FIN")
    assert pair.server.core.end_stream(sid) == [ev.StreamClosed(stream_id=sid)]
    pair.pump()
    assert bytes(pair.client.received[sid]) == b"pongafter the FIN"
    assert pair.client.kinds(sid) == ["StreamAccepted", "DataReceived", "StreamEnded", "StreamClosed"]
    assert pair.client.core.open_streams == pair.server.core.open_streams == 0


def test_server_half_closes_first() -> None:
    pair = Pair()
    sid = pair.open()
    pair.server.core.end_stream(sid)
    pair.pump()
    assert pair.client.of(ev.StreamEnded, sid)
    pair.client.core.send_data(sid, b"still going")
    assert pair.client.core.end_stream(sid) == [ev.StreamClosed(stream_id=sid)]
    pair.pump()
    assert bytes(pair.server.received[sid]) == b"still going"
    assert pair.server.kinds(sid) == ["StreamOpened", "DataReceived", "StreamEnded", "StreamClosed"]


@pytest.mark.parametrize("status", [400, 401, 503])
def test_reject(status: int) -> None:
    pair = Pair()
    sid = pair.client.core.open_stream("10.0.0.2:8080")
    pair.pump()
    assert isinstance(pair.server.core, ServerConnection)
    assert pair.server.core.reject(sid, status) == [ev.StreamClosed(stream_id=sid)]
    pair.pump()
    assert pair.client.events == [
        ev.StreamRejected(stream_id=sid, status=status, headers=()),
        ev.StreamClosed(stream_id=sid),
    ]
    assert pair.client.core.open_streams == pair.server.core.open_streams == 0
    assert pair.client.core._h2.open_outbound_streams == 0  # the slot is really free
    # The connection is still good for the next stream.
    assert pair.open() == sid + 2


def test_reject_accepts_only_refusals() -> None:
    pair = Pair()
    sid = pair.client.core.open_stream("10.0.0.2:8080")
    pair.pump()
    with pytest.raises(ValueError):
        pair.server.core.reject(sid, 200)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("pseudo", "reason"),
    [
        ([(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "a:1")], "not CONNECT"),
        ([(":method", "CONNECT"), (":authority", "no-port")], "not host:port"),
        ([(":method", "CONNECT"), (":authority", "10.0.0.1:0")], "port"),
    ],
)
def test_non_hbone_requests_get_400(pseudo: list[tuple[str, str]], reason: str) -> None:
    pair = Pair()
    h2conn = pair.client.core._h2
    sid = h2conn.get_next_available_stream_id()
    h2conn.send_headers(sid, pseudo)
    pair.pump()
    (refused,) = pair.server.events
    assert isinstance(refused, ev.RequestRefused) and refused.status == 400 and reason in refused.reason
    assert pair.server.core.open_streams == 0


def test_client_reset_reaches_server() -> None:
    pair = Pair()
    sid = pair.open()
    events = pair.client.core.reset_stream(sid)
    assert events == [
        ev.StreamReset(stream_id=sid, error_code=ErrorCodes.CANCEL, remote=False),
        ev.StreamClosed(stream_id=sid),
    ]
    pair.pump()
    assert pair.server.of(ev.StreamReset) == [ev.StreamReset(stream_id=sid, error_code=ErrorCodes.CANCEL, remote=True)]
    assert pair.server.core.open_streams == 0


def test_server_reset_with_connect_error() -> None:
    pair = Pair()
    sid = pair.open()
    pair.server.core.reset_stream(sid, ErrorCodes.CONNECT_ERROR)
    pair.pump()
    assert pair.client.of(ev.StreamReset) == [
        ev.StreamReset(stream_id=sid, error_code=ErrorCodes.CONNECT_ERROR, remote=True)
    ]
    with pytest.raises(ev.StreamStateError):
        pair.client.core.send_data(sid, b"too late")


def test_phase_rules() -> None:
    pair = Pair()
    sid = pair.client.core.open_stream("10.0.0.2:8080")
    with pytest.raises(ev.StreamStateError):  # RFC 9113 §8.5: no data before the 2xx
        pair.client.core.send_data(sid, b"early")
    pair.pump()
    server = pair.server.core
    assert isinstance(server, ServerConnection)
    with pytest.raises(ev.StreamStateError):
        server.send_data(sid, b"early")
    server.accept(sid)
    with pytest.raises(ev.StreamStateError):
        server.accept(sid)  # one answer per request
    with pytest.raises(ev.StreamStateError):
        server.reject(sid, 401)
    pair.pump()
    pair.client.core.end_stream(sid)
    with pytest.raises(ev.StreamStateError):
        pair.client.core.send_data(sid, b"after end")


def test_frames_are_at_most_one_mebibyte_and_small_writes_join() -> None:
    pair = Pair()
    sid = pair.open()
    pair.client.core.send_data(sid, b"a" * (3 * MiB))
    pair.pump()
    sizes = [len(e.data) for e in pair.server.of(ev.DataReceived, sid)]
    assert sizes == [MiB, MiB, MiB]
    # With the window closed, 100 small writes wait in the queue and then leave as one frame.
    pair.server.stalled.add(sid)
    pair.client.core.send_data(sid, b"b" * (4 * MiB))
    pair.pump()
    for _ in range(100):
        pair.client.core.send_data(sid, b"c" * 10)
    assert pair.client.core.buffered(sid) == 1000
    pair.server.stalled.clear()
    pair.server.core.acknowledge(sid, 4 * MiB)
    pair.pump()
    assert pair.server.of(ev.DataReceived, sid)[-1].data == b"c" * 1000
    assert pair.client.of(ev.WindowUpdated) == [ev.WindowUpdated(stream_id=sid)]


def test_one_unread_stream_never_stalls_the_others() -> None:
    """Lessons 4: per-stream back-pressure; the connection window is never held by one stream."""
    pair = Pair()
    streams = [pair.open() for _ in range(10)]
    stuck = streams[3]
    pair.server.stalled.add(stuck)
    size = 3 * STREAM_WINDOW  # each stream alone would exhaust its window three times over
    for index, sid in enumerate(streams):
        pair.client.core.send_data(sid, pattern(index, size))
        pair.client.core.end_stream(sid)
    pair.pump()
    for index, sid in enumerate(streams):
        if sid == stuck:
            continue
        assert bytes(pair.server.received[sid]) == pattern(index, size)
        assert pair.server.of(ev.StreamEnded, sid)
    # In all 9 x 12 MiB crossed a 16 MiB connection window while the stuck stream held 4 MiB.
    assert len(pair.server.received[stuck]) == STREAM_WINDOW
    assert pair.client.core.buffered(stuck) == size - STREAM_WINDOW
    # Once its reader drains, the stuck stream completes too.
    pair.server.stalled.clear()
    pair.server.core.acknowledge(stuck, STREAM_WINDOW)
    pair.pump()
    assert bytes(pair.server.received[stuck]) == pattern(3, size)


def test_many_streams_up_to_the_limit() -> None:
    pair = Pair()
    client = pair.client.core
    assert isinstance(client, ClientConnection)
    opened = [client.open_stream(f"10.0.0.2:{8000 + n}") for n in range(MAX_CONCURRENT_STREAMS)]
    assert client.available_streams == 0
    with pytest.raises(ev.StreamLimitError):
        client.open_stream("10.0.0.2:9999")
    pair.pump()
    assert len(pair.server.of(ev.StreamOpened)) == len(opened)
    client.reset_stream(opened[0])
    assert client.available_streams == 1


def test_graceful_close_refuses_new_streams_and_sends_goaway_when_drained() -> None:
    pair = Pair()
    sid = pair.open()
    client = pair.client.core
    assert isinstance(client, ClientConnection)
    late = client.open_stream("10.0.0.2:8080")  # crosses the server's decision to drain
    assert pair.server.core.close(reason="draining") == []  # a stream is still open
    pair.pump()
    assert pair.server.of(ev.RequestRefused) == [ev.RequestRefused(stream_id=late, status=None, reason="draining")]
    # RFC 9113 §8.7: REFUSED_STREAM means "not processed": the client may retry elsewhere.
    assert pair.client.of(ev.StreamReset, late) == [
        ev.StreamReset(stream_id=late, error_code=ErrorCodes.REFUSED_STREAM, remote=True)
    ]
    # The open stream finishes normally; the GOAWAY follows its close.
    client.send_data(sid, b"finishing")
    client.end_stream(sid)
    pair.pump()
    assert not pair.server.of(ev.ConnectionClosed)
    events = pair.server.core.end_stream(sid)
    assert events == [
        ev.StreamClosed(stream_id=sid),
        ev.ConnectionClosed(error_code=0, last_stream_id=late, remote=False, reason="draining"),
    ]
    pair.pump()
    assert bytes(pair.server.received[sid]) == b"finishing"
    assert pair.client.of(ev.StreamClosed, sid)
    assert pair.client.of(ev.ConnectionClosed) == [
        ev.ConnectionClosed(error_code=0, last_stream_id=late, remote=True, reason="draining")
    ]
    assert client.available_streams == 0
    with pytest.raises(ev.HboneProtocolError):
        client.open_stream("10.0.0.2:8080")


def test_foreign_goaway_ends_every_stream() -> None:
    """h2 allows nothing after a GOAWAY (python-hyper/h2#1181): processed streams end with its
    code, unprocessed ones are REFUSED_STREAM."""
    pair = Pair()
    sid = pair.open()
    late = pair.client.core.open_stream("10.0.0.2:8080")
    pair.server.core._h2.close_connection(last_stream_id=sid)  # as another implementation might
    pair.client.feed(pair.server.core.data_to_send())
    assert pair.client.events[-5:] == [
        ev.StreamReset(stream_id=sid, error_code=0, remote=True),
        ev.StreamClosed(stream_id=sid),
        ev.StreamReset(stream_id=late, error_code=ErrorCodes.REFUSED_STREAM, remote=True),
        ev.StreamClosed(stream_id=late),
        ev.ConnectionClosed(error_code=0, last_stream_id=sid, remote=True, reason="GOAWAY NO_ERROR"),
    ]


def test_error_close_resets_everything_now() -> None:
    pair = Pair()
    sid = pair.open()
    events = pair.client.core.close(ErrorCodes.INTERNAL_ERROR, "bug")
    assert events[0] == ev.StreamReset(stream_id=sid, error_code=ErrorCodes.INTERNAL_ERROR, remote=False)
    pair.pump()
    assert isinstance(pair.server.events[-1], ev.ConnectionClosed)
    assert pair.server.events[-1].error_code == ErrorCodes.INTERNAL_ERROR


def test_protocol_error_closes_the_connection() -> None:
    pair = Pair()
    sid = pair.open()
    events = pair.server.core.receive_data(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00")  # bad WINDOW_UPDATE
    assert events[:2] == [
        ev.StreamReset(stream_id=sid, error_code=ErrorCodes.PROTOCOL_ERROR, remote=False),
        ev.StreamClosed(stream_id=sid),
    ]
    assert isinstance(events[2], ev.ConnectionClosed) and not events[2].remote
    assert pair.server.core.data_to_send()  # the GOAWAY
    assert pair.server.core.receive_data(b"more") == []


def test_connection_lost_resets_every_stream() -> None:
    pair = Pair()
    first, second = pair.open(), pair.open()
    events = pair.client.core.connection_lost("socket closed")
    assert [type(e).__name__ for e in events] == [
        "StreamReset",
        "StreamClosed",
        "StreamReset",
        "StreamClosed",
        "ConnectionClosed",
    ]
    assert {e.stream_id for e in events if isinstance(e, ev.StreamClosed)} == {first, second}


def _feed_through_one_buffer(side, data: bytes, piece: int) -> list[int]:
    """Feed `data` as a reader with one reusable buffer does (Link's shared read buffer): each
    piece is written into the same bytearray, which is overwritten right after the call.
    Returns how many bytes of DATA the side had received after each piece."""
    buffer = bytearray(piece)
    view = memoryview(buffer)
    progress = []
    for start in range(0, len(data), piece):
        chunk = data[start : start + piece]
        buffer[: len(chunk)] = chunk
        side.feed(view[: len(chunk)])
        buffer[:] = b"\xee" * piece  # the next read would land here
        progress.append(sum(len(e.data) for e in side.of(ev.DataReceived)))
    return progress


def test_a_frame_arriving_in_pieces_is_delivered_as_it_comes() -> None:
    """A 1 MiB DATA frame read 64 KiB at a time reaches the consumer read by read (no waiting for
    the whole frame), intact although the reader reuses its buffer, and END_STREAM takes effect
    only after the frame's last byte."""
    pair = Pair()
    sid = pair.open()
    body = pattern(5, MiB)
    pair.client.core.send_data(sid, body)
    pair.client.core.end_stream(sid)
    wire = pair.client.core.data_to_send()
    progress = _feed_through_one_buffer(pair.server, wire, 64 << 10)
    assert progress[0] == (64 << 10) - 9  # the first read's payload, before the rest came
    assert progress == sorted(progress) and len(set(progress)) == len(progress)
    assert bytes(pair.server.received[sid]) == body
    assert pair.server.kinds(sid)[-2:] == ["DataReceived", "StreamEnded"]


def test_a_stream_reset_mid_frame_drops_the_rest_and_the_connection_goes_on() -> None:
    pair = Pair()
    big, small = pair.open(), pair.open()
    pair.client.core.send_data(big, pattern(1, MiB))
    pair.client.core.send_data(small, pattern(2, 10_000))
    wire = pair.client.core.data_to_send()
    pair.server.feed(wire[:300_000])
    assert 0 < len(pair.server.received[big]) < 300_000
    pair.server.do(pair.server.core.reset_stream(big))
    pair.server.feed(wire[300_000:])
    assert len(pair.server.received[big]) < 300_000  # nothing after the reset
    assert bytes(pair.server.received[small]) == pattern(2, 10_000)
    assert not pair.server.of(ev.ConnectionClosed)
    pair.pump()
    # The dropped bytes were charged to the connection window and given back: the stream that
    # is left can still move more than a whole connection window.
    pair.client.core.send_data(small, pattern(3, CONNECTION_WINDOW + MiB))
    pair.pump()
    assert len(pair.server.received[small]) == 10_000 + CONNECTION_WINDOW + MiB


def test_a_small_send_leaves_at_once_and_small_acknowledgements_send_nothing() -> None:
    pair = Pair()
    sid = pair.open()
    client, server = pair.client.core, pair.server.core
    window = client.send_window
    client.send_data(sid, b"q" * 1024)
    assert client.buffered(sid) == 0 and client.send_window == window - 1024
    wire = client.data_to_send()
    assert len(wire) == 9 + 1024 and wire[3] == 0x0  # one DATA frame, nothing else
    server.receive_data(wire)
    # The consumer drained it: a quarter of the stream window is the step for a WINDOW_UPDATE.
    assert server.acknowledge(sid, 1024) is False and server.data_to_send() == b""
    assert server.acknowledge(sid, STREAM_WINDOW // 4) is True
    update = server.data_to_send()
    assert update[3] == 0x8 and int.from_bytes(update[9:13], "big") == STREAM_WINDOW // 4 + 1024
    assert server.acknowledge(sid + 2, STREAM_WINDOW) is False  # no such stream: nothing to send
