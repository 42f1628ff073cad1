"""Unit tests for services.istiod.store.writer: group commit on a real SQLite file.

What clients rely on: concurrent requests share one commit; one refused request never affects
another; a dry run stores nothing; revisions have no gaps; what the API answered is what a
restart finds; and when the database fails, nobody is told their write succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from services.istiod.errors import ApiError
from services.istiod.store import sql
from services.istiod.store.history import History
from services.istiod.store.state import ADDED, DELETED, MODIFIED, Change, Index, Stored, Txn
from services.istiod.store.writer import Writer

pytestmark = pytest.mark.unit

PODS = "pods"
HISTORY = 100


@dataclass
class Store:
    engine: Engine
    index: Index
    history: History
    writer: Writer
    committed: list[list[Change]]


def open_store(path: Path) -> Store:
    """What istiod's lifespan does: prepare the database, load it, and build the writer."""
    engine = sql.make_engine(f"sqlite:///{path}")
    sql.prepare(engine)
    loaded = sql.load(engine, HISTORY)
    index = Index()
    for obj in loaded.objects:
        index.put(obj)
    index.revision = loaded.revision
    history = History(HISTORY, loaded.revision)
    history.load(loaded.history, loaded.revision)
    committed: list[list[Change]] = []
    writer = Writer(engine, index, history, on_commit=committed.append)
    return Store(engine, index, history, writer, committed)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = open_store(tmp_path / "istiod.db")
    yield s
    s.engine.dispose()


@pytest.fixture
def persist_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The revisions of every `sql.persist` call (the real function still does the work)."""
    calls: list[list[int]] = []
    real = sql.persist

    def counting(engine: Engine, changes: list[Change], existed: Any) -> None:
        calls.append([c.revision for c in changes])
        real(engine, changes, existed)

    monkeypatch.setattr(sql, "persist", counting)
    return calls


@contextlib.asynccontextmanager
async def running(writer: Writer) -> AsyncIterator[None]:
    task = asyncio.create_task(writer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def submit_together(writer: Writer, *ops: tuple[Callable[[Txn], Any], bool]) -> list[Any]:
    """Queue every op before the writer looks, so they form one batch; results or exceptions."""
    tasks = [asyncio.create_task(writer.submit(fn, dry_run=dry)) for fn, dry in ops]
    await asyncio.sleep(0)
    async with running(writer):
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "demo", "uid": f"uid-{name}"}, "spec": spec}


def create(name: str, **spec: Any) -> Callable[[Txn], Stored]:
    return lambda txn: txn.write(PODS, "demo", name, pod(name, **spec))


def delete(name: str) -> Callable[[Txn], Stored]:
    return lambda txn: txn.delete(PODS, "demo", name)


def refuse(name: str, error: Exception) -> Callable[[Txn], Stored]:
    """A mutation that stages a write and then fails, as a failed validation does."""

    def mutate(txn: Txn) -> Stored:
        txn.write(PODS, "demo", name, pod(name))
        raise error

    return mutate


def state(index: Index) -> dict[tuple[str, str, str], tuple[int, Any]]:
    return {o.key: (o.revision, o.data) for o in index.list(PODS)}


def outbox(engine: Engine) -> list[tuple[int, str, str]]:
    return [(r["revision"], r["op"], r["name"]) for r in sql.outbox_after(engine, 0, 10_000)]


# --- group commit --------------------------------------------------------------------------------


async def test_concurrent_submits_are_committed_in_one_batch(store: Store, persist_calls: list[list[int]]) -> None:
    results = await submit_together(store.writer, *[(create(f"p{i}"), False) for i in range(5)])
    assert persist_calls == [[1, 2, 3, 4, 5]]
    # Revisions follow submission order, and every answer is the stored version.
    assert [r.revision for r in results] == [1, 2, 3, 4, 5]
    assert [r.name for r in results] == [f"p{i}" for i in range(5)]
    assert all(store.index.get(PODS, "demo", r.name) is r for r in results)
    assert store.index.revision == 5
    assert [c.revision for c in store.history.since(0)] == [1, 2, 3, 4, 5]
    assert [[c.revision for c in batch] for batch in store.committed] == [[1, 2, 3, 4, 5]]


async def test_later_mutations_in_a_batch_see_earlier_ones(store: Store) -> None:
    seen: list[bool] = []

    def check_then_create(txn: Txn) -> Stored:
        seen.append(txn.get(PODS, "demo", "p0") is not None)
        return txn.write(PODS, "demo", "p1", pod("p1"))

    await submit_together(store.writer, (create("p0"), False), (check_then_create, False))
    assert seen == [True]


async def test_an_api_error_fails_only_its_own_request(store: Store, persist_calls: list[list[int]]) -> None:
    conflict = ApiError(409, "Conflict", "the object has been modified")
    results = await submit_together(
        store.writer,
        (create("p0"), False),
        (refuse("bad", conflict), False),
        (create("p2"), False),
    )
    assert results[1] is conflict
    assert [r.name for r in (results[0], results[2])] == ["p0", "p2"]
    # The refused request staged a write: it is neither stored nor given a revision.
    assert store.index.get(PODS, "demo", "bad") is None
    assert [r.revision for r in (results[0], results[2])] == [1, 2]
    assert persist_calls == [[1, 2]]
    assert outbox(store.engine) == [(1, ADDED, "p0"), (2, ADDED, "p2")]


async def test_a_crashing_mutation_becomes_a_500_for_that_request_only(store: Store) -> None:
    results = await submit_together(store.writer, (refuse("bad", KeyError("spec")), False), (create("p1"), False))
    assert isinstance(results[0], ApiError)
    assert (results[0].code, results[0].reason) == (500, "InternalError")
    assert results[1].revision == 1
    assert store.index.get(PODS, "demo", "bad") is None


async def test_a_dry_run_commits_nothing(store: Store, persist_calls: list[list[int]]) -> None:
    (dry,) = await submit_together(store.writer, (create("dry"), True))
    assert dry.name == "dry"  # the answer shows what would have been stored
    assert store.index.get(PODS, "demo", "dry") is None
    assert store.index.revision == 0
    assert persist_calls == []
    assert outbox(store.engine) == []
    assert store.history.since(0) == []
    assert store.committed == []


async def test_a_dry_run_among_real_writes_leaves_no_gap(store: Store) -> None:
    results = await submit_together(store.writer, (create("p0"), False), (create("dry"), True), (create("p2"), False))
    assert store.index.get(PODS, "demo", "dry") is None
    assert [r.revision for r in (results[0], results[2])] == [1, 2]
    assert outbox(store.engine) == [(1, ADDED, "p0"), (2, ADDED, "p2")]


async def test_revisions_are_contiguous_in_the_outbox_across_batches(
    store: Store, persist_calls: list[list[int]]
) -> None:
    await submit_together(store.writer, (create("a"), False), (create("b"), False))
    await submit_together(store.writer, (create("a", v=2), False), (delete("b"), False), (create("c"), False))
    await submit_together(store.writer, (delete("a"), False), (create("b"), False))
    assert outbox(store.engine) == [
        (1, ADDED, "a"),
        (2, ADDED, "b"),
        (3, MODIFIED, "a"),
        (4, DELETED, "b"),
        (5, ADDED, "c"),
        (6, DELETED, "a"),
        (7, ADDED, "b"),
    ]
    assert persist_calls == [[1, 2], [3, 4, 5], [6, 7]]
    assert [c.revision for c in store.history.since(0)] == list(range(1, 8))


async def test_a_reload_finds_exactly_what_was_committed(store: Store, tmp_path: Path) -> None:
    await submit_together(store.writer, (create("a"), False), (create("b"), False), (create("gone"), False))
    await submit_together(store.writer, (create("a", v=2), False), (delete("gone"), False))
    # Created and deleted within one batch: outbox rows, but no object.
    await submit_together(store.writer, (create("blip"), False), (delete("blip"), False), (create("c"), False))

    loaded = sql.load(store.engine, HISTORY)
    assert {o.key: (o.revision, o.data) for o in loaded.objects} == state(store.index)
    assert loaded.revision == store.index.revision == 8
    assert [(c.revision, c.op, c.obj.data) for c in loaded.history] == [
        (c.revision, c.op, c.obj.data) for c in store.history.since(0)
    ]
    again = open_store(tmp_path / "istiod.db")
    assert state(again.index) == state(store.index)
    assert again.index.get(PODS, "demo", "a").data["spec"] == {"v": 2}  # type: ignore[union-attr]
    again.engine.dispose()


# --- storage failures ----------------------------------------------------------------------------


def failing_persist(monkeypatch: pytest.MonkeyPatch, *, after_commit: bool) -> list[int]:
    """Make the next `sql.persist` raise, before writing or (a lost reply) after committing."""
    real = sql.persist
    failures: list[int] = []

    def persist(engine: Engine, changes: list[Change], existed: Any) -> None:
        if not failures:
            failures.append(len(changes))
            if after_commit:
                real(engine, changes, existed)
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))
        real(engine, changes, existed)

    monkeypatch.setattr(sql, "persist", persist)
    return failures


async def test_a_failed_commit_fails_every_write_and_changes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await submit_together(store.writer, (create("a"), False), (create("b"), False))
    before_state, before_history = state(store.index), store.history.since(0)
    failures = failing_persist(monkeypatch, after_commit=False)
    conflict = ApiError(409, "Conflict", "stale")

    results = await submit_together(
        store.writer,
        (create("a", v=2), False),
        (delete("b"), False),
        (create("dry"), True),
        (refuse("bad", conflict), False),
        (create("c"), False),
    )
    assert failures == [3]
    for failed in (results[0], results[1], results[4]):
        assert isinstance(failed, ApiError)
        assert (failed.code, failed.reason) == (500, "InternalError")
        assert "storage unavailable" in failed.message
    assert isinstance(results[2], Stored)  # a dry run never needed the database
    assert results[3] is conflict
    assert state(store.index) == before_state
    assert store.index.revision == 2
    assert store.history.since(0) == before_history
    assert len(store.committed) == 1
    assert outbox(store.engine) == [(1, ADDED, "a"), (2, ADDED, "b")]

    # The writer keeps going, and the failed batch's revisions are reused: no gap.
    (retried,) = await submit_together(store.writer, (create("c"), False))
    assert retried.revision == 3
    assert outbox(store.engine)[-1] == (3, ADDED, "c")


async def test_a_commit_that_landed_despite_an_error_is_reloaded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    await submit_together(store.writer, (create("a"), False))
    failing_persist(monkeypatch, after_commit=True)
    results = await submit_together(store.writer, (create("b"), False), (create("a", v=2), False))
    # The requests cannot know their outcome and are told so; memory follows the database.
    assert all(isinstance(r, ApiError) and r.code == 500 for r in results)
    loaded = sql.load(store.engine, HISTORY)
    assert {o.key: (o.revision, o.data) for o in loaded.objects} == state(store.index)
    assert store.index.revision == 3
    assert [c.revision for c in store.history.since(0)] == [1, 2, 3]
    (next_write,) = await submit_together(store.writer, (create("c"), False))
    assert next_write.revision == 4
