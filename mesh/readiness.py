"""Readiness as ztunnel (and the waypoint) keep it: each subsystem registers a token and marks it ready once; the
process is ready when no token is pending (istio/ztunnel: src/readiness.rs)."""

from __future__ import annotations


class Readiness:
    """Named blockers of readiness. Not thread-safe (the event loop owns it)."""

    def __init__(self) -> None:
        self._pending: set[str] = set()

    def register(self, name: str) -> None:
        """`name` must become ready before the process is."""
        self._pending.add(name)

    def mark_ready(self, name: str) -> None:
        self._pending.discard(name)

    @property
    def ready(self) -> bool:
        return not self._pending

    def pending(self) -> list[str]:
        """What is still awaited, sorted."""
        return sorted(self._pending)
