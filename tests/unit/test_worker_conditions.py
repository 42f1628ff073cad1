"""Merging status conditions: transitions, ownership, idempotence."""

from __future__ import annotations

import pytest

from services.worker.conditions import merge_conditions, needs_write

pytestmark = pytest.mark.unit

OWNED = {"ZtunnelAccepted", "istio.io/WaypointBound"}


def cond(type_: str, status: str, reason: str = "R", **extra) -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": "m", **extra}


def test_a_new_condition_gets_the_time_and_generation() -> None:
    merged = merge_conditions(None, [cond("ZtunnelAccepted", "True")], OWNED, 3, "T1")
    assert merged == [cond("ZtunnelAccepted", "True", lastTransitionTime="T1", observedGeneration=3)]


def test_the_transition_time_moves_only_when_the_status_flips() -> None:
    current = [cond("ZtunnelAccepted", "True", lastTransitionTime="T1", observedGeneration=1)]
    same = merge_conditions(current, [cond("ZtunnelAccepted", "True", reason="Other")], OWNED, 2, "T2")
    assert same[0]["lastTransitionTime"] == "T1" and same[0]["reason"] == "Other"
    flipped = merge_conditions(current, [cond("ZtunnelAccepted", "False")], OWNED, 2, "T2")
    assert flipped[0]["lastTransitionTime"] == "T2"


def test_conditions_of_other_owners_are_kept_and_ours_dropped_when_no_longer_wanted() -> None:
    current = [cond("Accepted", "True"), cond("ZtunnelAccepted", "True")]
    merged = merge_conditions(current, [], OWNED, 1, "T")
    assert merged == [cond("Accepted", "True")]


def test_rewriting_the_same_conditions_is_not_a_write() -> None:
    current = merge_conditions(None, [cond("ZtunnelAccepted", "True")], OWNED, 1, "T1")
    again = merge_conditions(current, [cond("ZtunnelAccepted", "True")], OWNED, 1, "T9")
    assert not needs_write(current, again)
    assert needs_write(current, merge_conditions(current, [cond("ZtunnelAccepted", "False")], OWNED, 1, "T9"))
