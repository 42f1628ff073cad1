"""A clock tests move by hand (mesh.clock.Clock): `sleep` returns only when `advance` passes its
deadline, so timing behaviour is tested without waiting."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


async def settle(rounds: int = 50) -> None:
    """Let every task that can run, run (each round is one pass of the event loop)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class FakeClock:
    """Wall-clock time that only moves in `advance`, waking sleepers in deadline order."""

    def __init__(self, start: datetime = EPOCH):
        self._now = start
        self._sleepers: list[tuple[datetime, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + timedelta(seconds=seconds), next(self._seq), wake))
        await wake

    @property
    def sleepers(self) -> int:
        """How many sleeps are pending (cancelled ones excluded)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, stopping at each sleeper's deadline on the way so that
        what it triggers runs at the time it was meant to."""
        target = self._now + timedelta(seconds=seconds)
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, wake = heapq.heappop(self._sleepers)
            if wake.done():
                continue  # cancelled
            self._now = max(self._now, when)
            wake.set_result(None)
            await settle()
        self._now = target
        await settle()

    async def advance_to(self, when: datetime) -> None:
        await self.advance((when - self._now).total_seconds())
