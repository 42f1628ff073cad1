"""Two HBONE cores pumped into each other, with no socket: the sans-IO test rig.

`Pair.pump()` moves bytes both ways until neither side has anything to send, optionally cut into
chunks of the sizes a `chunks` iterator gives. Each side keeps the events it saw, and a side
with `auto_ack` acknowledges received data at once (a consumer that keeps up), except on the
streams listed in `stalled`.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator

from mesh.hbone import events as ev
from mesh.hbone.protocol import ClientConnection, ServerConnection


class Side:
    """One core and what happened to it."""

    def __init__(self, core: ClientConnection | ServerConnection) -> None:
        self.core = core
        self.events: list[ev.Event] = []
        self.received: dict[int, bytearray] = defaultdict(bytearray)
        self.auto_ack = True
        self.stalled: set[int] = set()

    def feed(self, data: bytes) -> None:
        for event in self.core.receive_data(data):
            self.events.append(event)
            if isinstance(event, ev.DataReceived):
                self.received[event.stream_id] += event.data
                if self.auto_ack and event.stream_id not in self.stalled:
                    self.core.acknowledge(event.stream_id, len(event.data))

    def do(self, events: list[ev.Event]) -> None:
        """Record the events a local operation (end, reset, reject) returned."""
        self.events.extend(events)

    def of(self, kind: type, stream_id: int | None = None) -> list:
        return [e for e in self.events if isinstance(e, kind) and (stream_id is None or e.stream_id == stream_id)]

    def kinds(self, stream_id: int) -> list[str]:
        """Event type names of one stream, consecutive DataReceived merged into one."""
        names: list[str] = []
        for event in self.events:
            if getattr(event, "stream_id", None) != stream_id:
                continue
            name = type(event).__name__
            if not (name == "DataReceived" and names and names[-1] == name):
                names.append(name)
        return names


class Pair:
    """A client and a server core, connected by `pump`."""

    def __init__(self, chunks: Iterator[int] | None = None) -> None:
        self.client = Side(ClientConnection())
        self.server = Side(ServerConnection())
        self._chunks = chunks
        self.pump()

    def pump(self, rounds: int = 10_000) -> None:
        for _ in range(rounds):
            to_server = self.client.core.data_to_send()
            to_client = self.server.core.data_to_send()
            if not to_server and not to_client:
                return
            self._deliver(to_server, self.server)
            self._deliver(to_client, self.client)
        raise AssertionError("the pair never went quiet")

    def _deliver(self, data: bytes, side: Side) -> None:
        if not data:
            return
        if self._chunks is None:
            side.feed(data)
            return
        offset = 0
        while offset < len(data):
            size = next(self._chunks)
            side.feed(data[offset : offset + size])
            offset += size

    def open(self, authority: str = "10.0.0.2:8080", headers: tuple[tuple[str, str], ...] = ()) -> int:
        """Open a stream, let the server see it, accept it."""
        stream_id = self.client.core.open_stream(authority, headers)
        self.pump()
        assert isinstance(self.server.core, ServerConnection)
        self.server.core.accept(stream_id)
        self.pump()
        return stream_id


def cycle_chunks(sizes: list[int]) -> Iterator[int]:
    """Chunk sizes repeating `sizes` forever."""
    return itertools.cycle(sizes)


def pattern(stream_index: int, size: int) -> bytes:
    """Recognisable bytes for one stream, so mixed-up streams show."""
    block = bytes((stream_index * 7 + i) % 251 for i in range(251))
    return (block * (size // 251 + 1))[:size]
