"""The watch history: the most recent changes, addressable by revision, and a wake-up signal.

Every revision produces exactly one change, so the history is contiguous and a revision's
position is `revision - first`. A watcher remembers the last revision it has sent, waits for
`wait_for_change()`, then reads `since()`. A revision older than the history's start cannot be
resumed from: the watcher gets "410 Gone: too old resource version" and must relist, exactly as
with the apiserver after etcd compaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from .state import Change


class TooOld(Exception):
    """The requested revision is older than the history."""

    def __init__(self, requested: int, oldest: int):
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class History:
    """A bounded, contiguous log of recent changes with an asyncio broadcast on append."""

    def __init__(self, capacity: int, revision: int = 0):
        self.capacity = max(1, capacity)
        self._items: list[Change] = []
        self._first = revision + 1  # revision of _items[0]
        self._waiter: asyncio.Future[None] | None = None

    @property
    def revision(self) -> int:
        """The newest revision recorded (or the starting revision when empty)."""
        return self._first + len(self._items) - 1

    @property
    def oldest_resumable(self) -> int:
        """The smallest revision a watch may resume from."""
        return self._first - 1

    def load(self, changes: Iterable[Change], revision: int) -> None:
        """Replace the content (at start-up, from the outbox). `changes` must be contiguous."""
        items = sorted(changes, key=lambda c: c.revision)[-self.capacity :]
        if items and items[-1].revision != revision:
            raise ValueError("history does not end at the store revision")
        self._items = items
        self._first = items[0].revision if items else revision + 1

    def append(self, changes: list[Change]) -> None:
        """Add contiguous changes; a gap refuses the whole batch, leaving the history as it was."""
        for offset, change in enumerate(changes, start=1):
            if change.revision != self.revision + offset:
                raise ValueError(f"history gap: {change.revision} after {self.revision + offset - 1}")
        self._items.extend(changes)
        if len(self._items) > 2 * self.capacity:
            drop = len(self._items) - self.capacity
            del self._items[:drop]
            self._first += drop
        self._wake()

    def since(self, revision: int) -> list[Change]:
        """Changes with a revision greater than `revision`."""
        if revision < self.oldest_resumable:
            raise TooOld(revision, self.oldest_resumable)
        start = max(0, revision + 1 - self._first)
        return self._items[start:]

    async def wait_for_change(self, after: int, timeout: float | None = None) -> bool:
        """Wait until the history holds a revision greater than `after`; False on timeout."""
        while self.revision <= after:
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
            except TimeoutError:
                return False
        return True

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None
