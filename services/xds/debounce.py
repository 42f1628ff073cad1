"""Debouncing pushes: wait for a quiet period, but never longer than a maximum after the first change.

Pure timing logic (the caller passes `now`); Istio's pilot debounces the same way
(PILOT_DEBOUNCE_AFTER 100 ms quiet, PILOT_DEBOUNCE_MAX 10 s; ours defaults to 1 s).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Debounce:
    quiet: float = 0.1
    max_delay: float = 1.0
    first: float | None = None
    last: float | None = None
    count: int = 0

    def add(self, now: float, n: int = 1) -> None:
        """Changes arrived at `now`."""
        if self.first is None:
            self.first = now
        self.last = now
        self.count += n

    def deadline(self) -> float | None:
        """When the pending changes are due (None: nothing pending)."""
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.quiet, self.first + self.max_delay)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def take(self) -> int:
        """Start a new window; returns how many changes the closed one held."""
        count = self.count
        self.first = self.last = None
        self.count = 0
        return count
