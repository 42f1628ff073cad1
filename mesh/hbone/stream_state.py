"""Per-stream state of HBONE's sans-IO core: phases, the transition table, the send queue.

The RFC 9113 stream states (idle, open, half-closed, closed) are h2's; what is kept here is the
HBONE layer above them: whether the CONNECT has been answered, what waits to be sent, which
direction has ended, and how much consumed data has not yet been given back as window.
"""

from __future__ import annotations

from collections import deque
from enum import Enum


class Phase(Enum):
    """Where a CONNECT stream is in HBONE's life; h2 tracks the RFC 9113 states underneath."""

    REQUESTED = "awaiting the answer to its CONNECT"
    OPEN = "open"
    CLOSED = "closed"

    # Members are singletons compared by identity: hash them by identity too, in C (Enum's own
    # __hash__ is a Python call, and TRANSITIONS is looked up on every stream operation).
    __hash__ = object.__hash__


class Op(Enum):
    """What can happen to a stream at the HBONE layer."""

    ACCEPT = "accept"
    REJECT = "reject"
    ANSWERED_OK = "receive a 2xx answer"
    ANSWERED_REFUSAL = "receive a refusal"
    SEND = "send data"
    END = "end the stream"

    __hash__ = object.__hash__  # as Phase's


# (phase, operation) -> next phase. Anything missing is a StreamStateError: data may flow only
# once the CONNECT got its 2xx (RFC 9113 §8.5), and a request gets exactly one answer.
TRANSITIONS: dict[tuple[Phase, Op], Phase] = {
    (Phase.REQUESTED, Op.ACCEPT): Phase.OPEN,
    (Phase.REQUESTED, Op.REJECT): Phase.CLOSED,
    (Phase.REQUESTED, Op.ANSWERED_OK): Phase.OPEN,
    (Phase.REQUESTED, Op.ANSWERED_REFUSAL): Phase.CLOSED,
    (Phase.OPEN, Op.SEND): Phase.OPEN,
    (Phase.OPEN, Op.END): Phase.OPEN,
}


class StreamState:
    """One tunnel's bookkeeping: phase, outbound queue, half-close flags, unreturned window."""

    __slots__ = (
        "end_queued",
        "local_ended",
        "outbox",
        "phase",
        "queued",
        "receive_window",
        "remote_ended",
        "send_window",
        "stream_id",
        "uncredited",
    )

    def __init__(self, stream_id: int, phase: Phase, send_window: int = 65_535, receive_window: int = 65_535) -> None:
        self.stream_id = stream_id
        self.phase = phase
        # A deque only while data waits: an empty deque is 600 bytes, times every open tunnel.
        self.outbox: deque[bytes | memoryview] | tuple[()] = ()
        self.queued = 0  # bytes in outbox
        self.end_queued = False  # END_STREAM goes out after the outbox
        self.local_ended = False  # END_STREAM sent
        self.remote_ended = False  # END_STREAM received
        self.uncredited = 0  # bytes consumed but not yet returned by WINDOW_UPDATE
        self.send_window = send_window  # what the peer lets us send on this stream now
        self.receive_window = receive_window  # what we let the peer send on this stream now

    def take(self, limit: int) -> bytes | memoryview:
        """Up to `limit` bytes from the front of the queue, joining small writes into one frame."""
        outbox = self.outbox
        head = outbox[0]
        if len(head) > limit:
            view = memoryview(head)
            outbox[0] = view[limit:]
            return view[:limit]
        outbox.popleft()
        if not outbox:
            self.outbox = ()
            return head
        if len(head) + len(outbox[0]) > limit:
            return head
        parts, size = [head], len(head)
        while outbox and size + len(outbox[0]) <= limit:
            part = outbox.popleft()
            parts.append(part)
            size += len(part)
        if not outbox:
            self.outbox = ()
        return b"".join(parts)
