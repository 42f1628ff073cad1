"""What Link hands its TLS transport: every byte in order, and never more than 256 KiB per write.

The TLS layer encrypts a whole write into an outgoing buffer that keeps its largest size for the
connection's life, so the size of a single write is a memory bound (mesh/hbone/link.py). A real
client core produces the bytes; the transport records what it is given.
"""

from __future__ import annotations

import pytest

from mesh.hbone.link import _TLS_WRITE_MAX, Link
from mesh.hbone.protocol import ClientConnection, ServerConnection
from tests.unit.hbone.pump import Pair, pattern

pytestmark = pytest.mark.unit

MiB = 1 << 20


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []  # one entry per write() or writelines() call, joined

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: list[bytes]) -> None:
        self.writes.append(b"".join(bytes(p) for p in parts))

    def is_closing(self) -> bool:
        return False


async def test_bulk_frames_reach_tls_in_order_in_bounded_writes() -> None:
    pair = Pair()  # settle SETTINGS with a real server core, then take over the client's output
    sid = pair.open()
    core = pair.client.core
    assert isinstance(core, ClientConnection) and isinstance(pair.server.core, ServerConnection)
    link = Link(core, None)
    transport = RecordingTransport()
    link.transport = transport  # type: ignore[assignment]
    body = pattern(7, 3 * MiB + 12345)
    core.send_data(sid, body[: 2 * MiB])
    core.send_data(sid, b"tiny")
    core.send_data(sid, body[2 * MiB :])
    link.flush()
    assert transport.writes and all(len(w) <= _TLS_WRITE_MAX for w in transport.writes)
    # The server core reads the writes back as the same frames and bytes, in order.
    pair.server.feed(b"".join(transport.writes))
    assert bytes(pair.server.received[sid]) == body[: 2 * MiB] + b"tiny" + body[2 * MiB :]


async def test_small_frames_go_out_as_one_write() -> None:
    pair = Pair()
    sid = pair.open()
    link = Link(pair.client.core, None)
    transport = RecordingTransport()
    link.transport = transport  # type: ignore[assignment]
    pair.client.core.send_data(sid, b"a" * 1000)
    pair.client.core.send_data(sid, b"b" * 1000)
    link.flush()
    assert len(transport.writes) == 1  # one TLS record's worth, not one write per frame piece
