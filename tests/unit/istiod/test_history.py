"""Unit tests for services.istiod.store.history: the watch history watches resume from.

A watch that resumes from revision R must get exactly the changes after R, or a clear
"too old" when those are no longer kept, never a silent gap.
"""

from __future__ import annotations

import asyncio

import pytest

from services.istiod.store.history import History, TooOld
from services.istiod.store.state import ADDED, Change, Stored

pytestmark = pytest.mark.unit


def change(revision: int) -> Change:
    data = {"metadata": {"name": f"p{revision}", "namespace": "demo", "resourceVersion": str(revision)}}
    return Change(revision, ADDED, Stored("pods", "demo", f"p{revision}", revision, data), None)


def revisions(changes: list[Change]) -> list[int]:
    return [c.revision for c in changes]


def filled(capacity: int, start: int, end: int) -> History:
    """A history that started at `start` and has had every revision up to `end` appended."""
    history = History(capacity, start)
    history.append([change(r) for r in range(start + 1, end + 1)])
    return history


def test_since_returns_exactly_the_newer_changes() -> None:
    history = filled(10, 0, 5)
    assert revisions(history.since(0)) == [1, 2, 3, 4, 5]
    assert revisions(history.since(3)) == [4, 5]
    assert history.since(5) == []
    assert history.since(7) == []  # a client ahead of us simply waits
    assert history.revision == 5


def test_an_empty_history_starts_at_the_store_revision() -> None:
    history = History(10, revision=40)
    assert history.revision == 40
    assert history.oldest_resumable == 40
    assert history.since(40) == []
    with pytest.raises(TooOld):
        history.since(39)
    history.append([change(41)])
    assert revisions(history.since(40)) == [41]


def test_since_below_the_oldest_resumable_revision_is_too_old() -> None:
    history = filled(10, 20, 25)
    assert history.oldest_resumable == 20
    assert revisions(history.since(20)) == [21, 22, 23, 24, 25]
    with pytest.raises(TooOld) as info:
        history.since(19)
    assert (info.value.requested, info.value.oldest) == (19, 20)
    assert "too old resource version: 19 (20)" in str(info.value)


def test_trimming_keeps_at_least_capacity_changes_and_stays_contiguous() -> None:
    capacity = 3
    history = History(capacity)
    for r in range(1, 40):
        history.append([change(r)])
        kept = history.since(history.oldest_resumable)
        assert len(kept) >= min(r, capacity)
        assert len(kept) <= 2 * capacity
        assert revisions(kept) == list(range(history.oldest_resumable + 1, r + 1))
        with pytest.raises(TooOld):
            history.since(history.oldest_resumable - 1)
    assert history.oldest_resumable > 30  # old revisions did go


def test_trimming_after_a_large_batch_keeps_the_newest() -> None:
    history = filled(5, 0, 100)
    assert revisions(history.since(history.oldest_resumable)) == list(range(96, 101))
    with pytest.raises(TooOld):
        history.since(94)


def test_append_refuses_gaps_and_repeats() -> None:
    history = filled(10, 0, 3)
    with pytest.raises(ValueError, match="history gap: 5 after 3"):
        history.append([change(5)])
    with pytest.raises(ValueError, match="history gap: 3 after 3"):
        history.append([change(3)])
    assert history.revision == 3
    assert revisions(history.since(0)) == [1, 2, 3]
    history.append([change(4), change(5)])
    assert revisions(history.since(3)) == [4, 5]


def test_capacity_is_at_least_one() -> None:
    history = filled(0, 0, 10)
    assert history.capacity == 1
    assert revisions(history.since(history.revision - 1)) == [10]


def test_load_keeps_the_contiguous_tail_ending_at_the_store_revision() -> None:
    history = History(3, 0)
    history.load([change(r) for r in (9, 5, 7, 6, 8)], 9)  # the outbox's order does not matter
    assert history.revision == 9
    assert history.oldest_resumable == 6
    assert revisions(history.since(6)) == [7, 8, 9]
    with pytest.raises(TooOld):
        history.since(5)
    history.append([change(10)])
    assert revisions(history.since(8)) == [9, 10]


def test_load_of_nothing_resumes_only_from_the_store_revision() -> None:
    history = History(10, 0)
    history.load([], 12)
    assert history.revision == 12
    assert history.since(12) == []
    with pytest.raises(TooOld):
        history.since(11)


def test_load_refuses_a_history_that_does_not_end_at_the_store_revision() -> None:
    history = History(10, 0)
    with pytest.raises(ValueError, match="does not end at the store revision"):
        history.load([change(1), change(2)], 3)


async def test_wait_for_change_wakes_on_append() -> None:
    history = filled(10, 0, 2)
    waiters = [asyncio.create_task(history.wait_for_change(2, timeout=5)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    history.append([change(3)])
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]


async def test_wait_for_change_returns_at_once_when_already_newer() -> None:
    history = filled(10, 0, 2)
    assert await asyncio.wait_for(history.wait_for_change(1, timeout=5), 0.5) is True


async def test_wait_for_change_times_out_without_a_change() -> None:
    history = filled(10, 0, 2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await history.wait_for_change(2, timeout=0.05) is False
    assert loop.time() - started >= 0.04
    # A later waiter is still woken: the timed-out wait left no broken future behind.
    waiter = asyncio.create_task(history.wait_for_change(2, timeout=5))
    await asyncio.sleep(0)
    history.append([change(3)])
    assert await asyncio.wait_for(waiter, 1) is True
