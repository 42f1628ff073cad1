"""HBONE's own DATA and WINDOW_UPDATE handling (core.py) against an independent HTTP/2 peer:
the `h2` package's plain H2Connection, so framing and flow-control mistakes cannot cancel out
between two copies of the same code. Also the connection errors RFC 9113 asks for."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events as h2e
import pytest
from h2.errors import ErrorCodes

from mesh.hbone import events as ev
from mesh.hbone.frames import frame_header
from mesh.hbone.protocol import ClientConnection, ServerConnection

pytestmark = pytest.mark.unit

MiB = 1 << 20


class Peer:
    """A plain h2 connection that acknowledges what it receives and keeps it per stream."""

    def __init__(self, client_side: bool) -> None:
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client_side))
        self.h2.initiate_connection()
        self.received: dict[int, bytearray] = {}
        self.events: list[h2e.Event] = []

    def feed(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2e.DataReceived):
                self.received.setdefault(event.stream_id, bytearray()).extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def send_all(self, stream_id: int, data: bytes, pad: int | None = None) -> int:
        """Send as much of `data` as the windows allow; returns how much went."""
        sent = 0
        while sent < len(data):
            room = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            room -= (pad or 0) + (1 if pad is not None else 0)
            if room <= 0:
                break
            chunk = data[sent : sent + room]
            self.h2.send_data(stream_id, chunk, pad_length=pad)
            sent += len(chunk)
        return sent


def pump(ours: ClientConnection | ServerConnection, peer: Peer, events: list, rounds: int = 10_000) -> None:
    for _ in range(rounds):
        to_peer, to_ours = ours.data_to_send(), peer.h2.data_to_send()
        if not to_peer and not to_ours:
            return
        if to_peer:
            peer.feed(to_peer)
        if to_ours:
            for event in ours.receive_data(to_ours):
                events.append(event)
                if isinstance(event, ev.DataReceived):
                    ours.acknowledge(event.stream_id, len(event.data))
    raise AssertionError("never went quiet")


def received(events: list, stream_id: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.DataReceived) and e.stream_id == stream_id)


def test_our_client_moves_megabytes_both_ways_through_an_h2_server_with_small_windows() -> None:
    ours, peer, events = ClientConnection(), Peer(client_side=False), []
    pump(ours, peer, events)
    sid = ours.open_stream("10.0.0.2:8080")
    pump(ours, peer, events)
    peer.h2.send_headers(sid, [(":status", "200")])
    pump(ours, peer, events)
    up = bytes(range(256)) * (40 * 1024)  # 10 MiB: 160 times h2's default 64 KiB window
    ours.send_data(sid, up)
    ours.end_stream(sid)
    pump(ours, peer, events)
    assert bytes(peer.received[sid]) == up
    assert any(isinstance(e, h2e.StreamEnded) for e in peer.events)
    down = bytes(reversed(up))
    sent = 0
    while sent < len(down):  # the peer sends as our WINDOW_UPDATEs allow, padding some frames
        sent += peer.send_all(sid, down[sent:], pad=7 if sent % 2 else None)
        pump(ours, peer, events)
    peer.h2.end_stream(sid)
    pump(ours, peer, events)
    assert received(events, sid) == down
    assert [type(e).__name__ for e in events if getattr(e, "stream_id", None) == sid][-2:] == [
        "StreamEnded",
        "StreamClosed",
    ]
    assert ours.open_streams == 0


def test_an_h2_client_through_our_server_with_many_streams() -> None:
    ours, peer, events = ServerConnection(), Peer(client_side=True), []
    pump(ours, peer, events)
    sids = [peer.h2.get_next_available_stream_id() + 2 * i for i in range(5)]
    for sid in sids:
        peer.h2.send_headers(sid, [(":method", "CONNECT"), (":authority", f"10.0.0.{sid}:80")])
    pump(ours, peer, events)
    for sid in sids:
        ours.accept(sid)
    pump(ours, peer, events)
    for i, sid in enumerate(sids):
        payload = bytes([i]) * (3 * MiB)
        sent = 0
        while sent < len(payload):
            sent += peer.send_all(sid, payload[sent:])
            pump(ours, peer, events)
        ours.send_data(sid, payload[::-1][: MiB + 17])
        ours.end_stream(sid)
        peer.h2.end_stream(sid)
        pump(ours, peer, events)
        assert received(events, sid) == payload
        assert bytes(peer.received[sid]) == payload[::-1][: MiB + 17]
    assert ours.open_streams == 0


def handshake() -> tuple[ServerConnection, Peer, int, list]:
    ours, peer, events = ServerConnection(), Peer(client_side=True), []
    pump(ours, peer, events)
    sid = peer.h2.get_next_available_stream_id()
    peer.h2.send_headers(sid, [(":method", "CONNECT"), (":authority", "10.0.0.2:80")])
    pump(ours, peer, events)
    ours.accept(sid)
    pump(ours, peer, events)
    return ours, peer, sid, events


def closed_with(events: list) -> int:
    closed = [e for e in events if isinstance(e, ev.ConnectionClosed)]
    assert closed, events
    return closed[-1].error_code


def test_data_beyond_the_stream_window_is_a_flow_control_error() -> None:
    ours, _peer, sid, _ = handshake()
    frame = frame_header(MiB, 0, 0, sid) + bytes(MiB)
    events = []
    for _ in range(5):  # 5 MiB into a 4 MiB stream window, without waiting for WINDOW_UPDATE
        events += ours.receive_data(frame)
    assert closed_with(events) == ErrorCodes.FLOW_CONTROL_ERROR
    assert sum(len(e.data) for e in events if isinstance(e, ev.DataReceived)) == 4 * MiB
    assert ours.receive_data(frame) == []  # nothing after the connection error


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (frame_header(4, 8, 0, 0) + (0).to_bytes(4, "big"), ErrorCodes.PROTOCOL_ERROR),  # increment 0
        (frame_header(4, 8, 0, 0) + (2**31 - 1).to_bytes(4, "big"), ErrorCodes.FLOW_CONTROL_ERROR),
        (frame_header(3, 0, 0x8, 1) + bytes([3, 0, 0]), ErrorCodes.PROTOCOL_ERROR),  # padding ≥ length
        (frame_header(5, 0, 0, 0) + b"hello", ErrorCodes.PROTOCOL_ERROR),  # DATA on stream 0
        (frame_header(2 * MiB, 0, 0, 1), ErrorCodes.FRAME_SIZE_ERROR),  # larger than announced
    ],
)
def test_connection_errors(frame: bytes, code: ErrorCodes) -> None:
    ours, _peer, _sid, _ = handshake()
    assert closed_with(ours.receive_data(frame)) == code


def test_a_zero_stream_window_update_resets_only_that_stream() -> None:
    ours, _peer, sid, _ = handshake()
    events = ours.receive_data(frame_header(4, 8, 0, sid) + (0).to_bytes(4, "big"))
    resets = [e for e in events if isinstance(e, ev.StreamReset)]
    assert resets and resets[0].error_code == ErrorCodes.PROTOCOL_ERROR
    assert not any(isinstance(e, ev.ConnectionClosed) for e in events)


def test_data_after_end_stream_is_refused_by_h2() -> None:
    ours, peer, sid, events = handshake()
    peer.h2.send_data(sid, b"last", end_stream=True)
    pump(ours, peer, events)
    assert received(events, sid) == b"last" and any(isinstance(e, ev.StreamEnded) for e in events)
    late = ours.receive_data(frame_header(4, 0, 0, sid) + b"more")
    assert b"more" not in received(late, sid)
    assert ours.data_to_send()  # h2 answered the closed stream (RST_STREAM or GOAWAY)
