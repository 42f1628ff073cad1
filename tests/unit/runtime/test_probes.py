"""Readiness from consecutive probe results."""

from __future__ import annotations

import pytest

from dataplane.runtime.probes import ProbeTracker

pytestmark = pytest.mark.unit


def run(tracker: ProbeTracker, results: str) -> list[bool]:
    out = []
    for r in results:
        tracker.observe(r == "+")
        out.append(tracker.ready)
    return out


def test_ready_after_success_threshold() -> None:
    assert run(ProbeTracker(success_threshold=2, failure_threshold=3), "+-++") == [False, False, False, True]


def test_unready_after_failure_threshold_in_a_row() -> None:
    t = ProbeTracker(success_threshold=1, failure_threshold=3)
    assert run(t, "+--+---") == [True, True, True, True, True, True, False]


def test_observe_reports_changes() -> None:
    t = ProbeTracker(failure_threshold=1)
    assert t.observe(True) is True
    assert t.observe(True) is False
    assert t.observe(False) is True
