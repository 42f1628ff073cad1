"""Time as an injected dependency: what a long-lived manager asks of a clock.

Managers take a `Clock` instead of calling `datetime.now()` and `asyncio.sleep()` themselves, so
tests drive time with a fake clock (tests/fakes/fake_clock.py) instead of sleeping (STYLE: "an
injected CA client and clock, so tests drive time").
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time (certificates carry wall-clock validity) and sleeping on that time."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds` of this clock's time have passed (at once when <= 0)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
