"""`meta.k8s.io/v1` Tables: what `kubectl get` prints, rendered server-side per kind."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from mesh.resources.kind import ResourceKind

from ..store.state import Stored


def human_age(seconds: float) -> str:
    """apimachinery's HumanDuration: `45s`, `3m20s`, `25m`, `4h10m`, `2d5h`, `40d`, `3y12d`."""
    # Like Go's int(d.Seconds()), truncate toward zero. Up to a second in the future is clock
    # skew ("0s"); beyond that HumanDuration answers "<invalid>" (apimachinery duration.go).
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    s = max(s, 0)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 730:
        return f"{days}d"
    years = days // 365
    if years < 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def age_of(timestamp: str | None, now: datetime | None = None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<invalid>"
    return human_age(((now or datetime.now(UTC)) - created).total_seconds())


def column_definitions(kind: ResourceKind) -> list[dict[str, Any]]:
    return [
        {
            "name": c.name,
            "type": "string" if c.type == "date" else c.type,
            "format": c.format,
            "description": c.description,
            "priority": c.priority,
        }
        for c in kind.columns
    ]


def _cell(value: Any, column_type: str, now: datetime) -> Any:
    if column_type == "date":
        return age_of(value, now)
    if value is None:
        return "<none>" if column_type == "string" else 0
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return value


def row(kind: ResourceKind, obj: Stored, now: datetime) -> dict[str, Any]:
    cells = [_cell(c.get(obj.data), c.type, now) for c in kind.columns]
    return {
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.data["metadata"],
        },
    }


def table(kind: ResourceKind, objects: Iterable[Stored], revision: int, *, with_columns: bool = True) -> dict[str, Any]:
    """A Table of `objects`; watch events after the first carry no column definitions."""
    now = datetime.now(UTC)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(revision)},
        "columnDefinitions": column_definitions(kind) if with_columns else [],
        "rows": [row(kind, o, now) for o in objects],
    }
