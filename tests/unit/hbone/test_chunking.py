"""Hypothesis: cutting the byte streams at arbitrary points never changes what either side sees.

A random session (several streams, each accepted or refused, data both ways, half-close in
either order or a reset) runs twice: once with every write delivered whole, once with the bytes
cut into random chunks. Per stream, the outcome and the event sequence (consecutive data events
merged) must be the same, and the data must arrive intact.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.hbone import events as ev
from mesh.hbone.protocol import ServerConnection
from tests.unit.hbone.pump import Pair, cycle_chunks, pattern

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Plan:
    """What happens to one stream."""

    answer: int  # 200, 401 or 503
    up: int  # bytes client -> server
    down: int  # bytes server -> client
    client_ends_first: bool
    client_resets: bool


plans = st.builds(
    Plan,
    answer=st.sampled_from([200, 200, 200, 401, 503]),
    up=st.integers(0, 80_000),
    down=st.integers(0, 80_000),
    client_ends_first=st.booleans(),
    client_resets=st.booleans(),
)


def run(session: list[Plan], chunks: list[int] | None) -> tuple[Pair, list[int]]:
    pair = Pair(cycle_chunks(chunks) if chunks else None)
    client, server = pair.client.core, pair.server.core
    assert isinstance(server, ServerConnection)
    ids = [client.open_stream(f"10.0.0.{n + 1}:80", (("forwarded", f'for="10.1.0.{n}"'),)) for n in range(len(session))]
    pair.pump()
    for sid, plan in zip(ids, session, strict=True):
        if plan.answer == 200:
            server.accept(sid)
        else:
            pair.server.do(server.reject(sid, plan.answer))
    pair.pump()
    live = [(n, sid, plan) for n, (sid, plan) in enumerate(zip(ids, session, strict=True)) if plan.answer == 200]
    for n, sid, plan in live:
        client.send_data(sid, pattern(n, plan.up))
        server.send_data(sid, pattern(n + 100, plan.down))
    pair.pump()
    for _, sid, plan in live:
        if plan.client_resets:
            pair.client.do(client.reset_stream(sid))
            continue
        first, second = (pair.client, pair.server) if plan.client_ends_first else (pair.server, pair.client)
        first.do(first.core.end_stream(sid))
        pair.pump()
        second.do(second.core.end_stream(sid))
    pair.pump()
    return pair, ids


def outcome(pair: Pair, ids: list[int]) -> list[tuple]:
    return [
        (
            pair.client.kinds(sid),
            pair.server.kinds(sid),
            bytes(pair.client.received[sid]),
            bytes(pair.server.received[sid]),
        )
        for sid in ids
    ]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    session=st.lists(plans, min_size=1, max_size=4), chunks=st.lists(st.integers(1, 70_000), min_size=1, max_size=20)
)
def test_split_points_never_change_the_result(session: list[Plan], chunks: list[int]) -> None:
    whole, ids = run(session, None)
    cut, cut_ids = run(session, chunks)
    assert cut_ids == ids
    assert outcome(cut, cut_ids) == outcome(whole, ids)
    for n, (sid, plan) in enumerate(zip(ids, session, strict=True)):
        statuses = [e for e in cut.client.events if isinstance(e, ev.StreamAccepted | ev.StreamRejected)]
        assert [e.status for e in statuses if e.stream_id == sid] == [plan.answer]
        if plan.answer == 200:
            assert bytes(cut.server.received[sid]) == pattern(n, plan.up)
            assert bytes(cut.client.received[sid]) == pattern(n + 100, plan.down)
        assert cut.client.of(ev.StreamClosed, sid) and (plan.answer != 200 or cut.server.of(ev.StreamClosed, sid))
    assert cut.client.core.open_streams == cut.server.core.open_streams == 0
