"""Merging status conditions (pure): what a status write should contain, and whether it is needed.

Conditions follow metav1.Condition: one per `type`; `lastTransitionTime` changes only when the
`status` flips; `observedGeneration` records the generation the condition was computed for.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    current: list[Json] | None, wanted: list[Json], owned: set[str], generation: int | None, now: str
) -> list[Json]:
    """The new condition list: `wanted` replaces the types we own, others are kept as they are.

    A type we own that is no longer wanted is dropped (e.g. a policy no longer for ztunnel).
    """
    by_type = {c.get("type"): c for c in current or []}
    out = [c for c in current or [] if c.get("type") not in owned]
    for cond in wanted:
        previous = by_type.get(cond["type"])
        merged = {k: v for k, v in cond.items() if v is not None}
        same_status = previous is not None and previous.get("status") == cond.get("status")
        merged["lastTransitionTime"] = previous.get("lastTransitionTime", now) if same_status else now
        if generation is not None:
            merged["observedGeneration"] = generation
        out.append(merged)
    return sorted(out, key=lambda c: str(c.get("type")))


def _comparable(conditions: list[Json]) -> list[Json]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]


def needs_write(current: list[Json] | None, merged: list[Json]) -> bool:
    """Only write when something but the timestamps differs (jobs are retried and repeated)."""
    return _comparable(sorted(current or [], key=lambda c: str(c.get("type")))) != _comparable(merged)
