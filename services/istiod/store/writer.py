"""The single writer: runs mutations in order and commits them in batches (group commit).

Requests submit a mutation (a function of a `Txn`). The writer takes every mutation waiting,
runs each against the current state plus what the batch has staged so far, writes the batch's
changes and outbox rows in one database transaction, then updates the in-memory index and the
watch history and answers the requests. Being the only writer makes revision order equal commit
order (so the relay never skips a revision) and makes read-check-write race-free without locks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

from ..errors import ApiError, internal
from . import sql
from .history import History
from .state import Change, Index, Txn

log = logging.getLogger("istiod.store")

T = TypeVar("T")
Mutation = Callable[[Txn], Any]


@dataclass
class _Op:
    mutate: Mutation
    dry_run: bool
    future: asyncio.Future[Any]


class Writer:
    """Owns every write to the database. Start `run()` as a task; `submit()` from handlers."""

    def __init__(
        self,
        engine: Engine,
        index: Index,
        history: History,
        *,
        max_batch: int = 128,
        on_commit: Callable[[list[Change]], None] | None = None,
    ):
        self._engine = engine
        self._index = index
        self._history = history
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self.published_revision = 0  # set by the relay; outbox rows at or below it may be compacted
        self._last_compaction = time.monotonic()
        self.compaction_interval = 5.0

    async def submit(self, mutate: Callable[[Txn], T], *, dry_run: bool = False) -> T:
        """Run `mutate` in the next batch and return its result once the batch is durable."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Op(mutate, dry_run, future))
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._run_batch(batch)
            await self._maybe_compact()

    async def _run_batch(self, batch: list[_Op]) -> None:
        parent = Txn(self._index, self._index.revision + 1)
        outcomes: list[tuple[_Op, bool, Any]] = []
        for op in batch:
            child = parent.child()
            try:
                result = op.mutate(child)
            except ApiError as e:
                outcomes.append((op, False, e))
                continue
            except Exception as e:  # a bug in a mutation must not take the writer down
                log.exception("mutation failed")
                outcomes.append((op, False, internal(str(e))))
                continue
            if not op.dry_run:
                child.commit_into_parent()
            outcomes.append((op, True, result))
        changes = parent.changes
        if changes:
            existed = [k for k in {c.obj.key for c in changes} if self._index.get(*k) is not None]
            try:
                await asyncio.to_thread(sql.persist, self._engine, changes, existed)
            except Exception as e:
                log.error("commit failed: %s", e)
                await self._resync_after_failure()
                error = internal(f"storage unavailable: {type(e).__name__}")
                outcomes = [(op, False, error) if ok and not op.dry_run else (op, ok, r) for op, ok, r in outcomes]
                changes = []
            for change in changes:
                self._index.apply(change)
            if changes:
                self._history.append(changes)
                if self._on_commit is not None:
                    self._on_commit(changes)
        for op, ok, result in outcomes:
            if op.future.done():  # the request went away
                continue
            if ok:
                op.future.set_result(result)
            else:
                op.future.set_exception(result)

    async def _resync_after_failure(self) -> None:
        # A failed commit may still have landed (the connection broke after COMMIT was sent).
        # Re-read the database so memory never disagrees with what is durable.
        try:
            loaded = await asyncio.to_thread(sql.load, self._engine, self._history.capacity)
        except Exception as e:
            log.error("re-reading the store failed: %s", e)
            return
        if loaded.revision == self._index.revision:
            return
        log.warning("store revision moved to %d during a failed commit; reloading", loaded.revision)
        fresh = Index()
        for obj in loaded.objects:
            fresh.put(obj)
        self._index.__dict__.update(fresh.__dict__)
        self._index.revision = loaded.revision
        missing = [c for c in loaded.history if c.revision > self._history.revision]
        if missing:
            self._history.append(missing)

    async def _maybe_compact(self) -> None:
        now = time.monotonic()
        if now - self._last_compaction < self.compaction_interval:
            return
        self._last_compaction = now
        # Keep every row not yet in the stream, and the newest `capacity` rows for watch resumes.
        below = min(self.published_revision + 1, self._index.revision - self._history.capacity + 1)
        if below > 1:
            try:
                await asyncio.to_thread(sql.compact, self._engine, below)
            except Exception as e:
                log.warning("outbox compaction failed: %s", e)
