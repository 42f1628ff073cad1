"""Unit tests for services.istiod.api.tables: the Tables `kubectl get` prints.

Ages must read exactly as apimachinery's `duration.HumanDuration` writes them, since kubectl
users compare them with what a real cluster shows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mesh.resources.core import POD
from services.istiod.api.tables import age_of, human_age, row, table
from services.istiod.store.state import Stored

pytestmark = pytest.mark.unit

S, M, H, D = 1, 60, 3600, 86400
Y = 365 * D


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.9, "0s"),
        (59, "59s"),
        (119, "119s"),
        (2 * M, "2m"),
        (2 * M + 1, "2m1s"),
        (9 * M + 59, "9m59s"),
        (10 * M, "10m"),
        (10 * M + 59, "10m"),
        (179 * M + 59, "179m"),
        (3 * H, "3h"),
        (3 * H + 5 * M + 30, "3h5m"),
        (7 * H + 59 * M, "7h59m"),
        (8 * H, "8h"),
        (8 * H + 59 * M, "8h"),
        (47 * H, "47h"),
        (2 * D, "2d"),
        (2 * D + 5 * H, "2d5h"),
        (7 * D + 23 * H, "7d23h"),
        (8 * D, "8d"),
        (8 * D + 23 * H, "8d"),
        (729 * D, "729d"),
        (2 * Y, "2y"),
        (3 * Y + 12 * D, "3y12d"),
        (7 * Y + 364 * D, "7y364d"),
        (8 * Y, "8y"),
        (8 * Y + 100 * D, "8y"),
        (-1, "0s"),  # up to a second in the future is clock skew
        (-1.9, "0s"),
        (-2, "<invalid>"),  # HumanDuration's answer for a timestamp in the future
        (-3 * D, "<invalid>"),
    ],
)
def test_human_age_reads_like_human_duration(seconds: float, text: str) -> None:
    assert human_age(seconds) == text


def test_age_of_a_timestamp() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert age_of("2026-03-01T11:55:00Z", now) == "5m"
    assert age_of("2026-02-27T10:00:00Z", now) == "2d2h"
    assert age_of(None, now) == "<unknown>"
    assert age_of("", now) == "<unknown>"
    assert age_of("yesterday", now) == "<invalid>"


def _rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod(name: str, created: datetime, **extra: Any) -> Stored:
    data: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "demo",
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "creationTimestamp": _rfc3339(created),
            "labels": {"app": name},
        },
        "spec": {"containers": [{"name": "app"}, {"name": "proxy"}]},
    }
    data.update(extra)
    POD.defaults(data)  # type: ignore[misc]
    return Stored(POD.key, "demo", name, 7, data)


def test_pod_table_has_kubectl_columns_and_partial_object_metadata() -> None:
    created = datetime.now(UTC) - timedelta(days=10)
    pending = _pod("web", created)
    doc = table(POD, [pending], 42)

    assert (doc["kind"], doc["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert doc["metadata"] == {"resourceVersion": "42"}
    columns = [(c["name"], c["type"], c["format"], c["priority"]) for c in doc["columnDefinitions"]]
    assert columns == [
        ("Name", "string", "name", 0),
        ("Ready", "string", "", 0),
        ("Status", "string", "", 0),
        ("Restarts", "integer", "", 0),
        ("Age", "string", "", 0),  # a date rendered as an age, as the apiserver types it
        ("IP", "string", "", 1),  # -o wide only
        ("Node", "string", "", 1),
    ]
    assert all("description" in c for c in doc["columnDefinitions"])
    (only,) = doc["rows"]
    assert only["cells"] == ["web", "0/2", "Pending", 0, "10d", "<none>", "<none>"]
    assert only["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": pending.data["metadata"],
    }


def test_pod_row_shows_readiness_restarts_ip_and_node() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    running = _pod(
        "api",
        now - timedelta(minutes=3, seconds=20),
        status={
            "phase": "Running",
            "podIP": "198.18.16.5",
            "containerStatuses": [{"ready": True, "restartCount": 2}, {"ready": False, "restartCount": 1}],
        },
    )
    running.data["spec"]["nodeName"] = "node-1"
    assert row(POD, running, now)["cells"] == ["api", "1/2", "Running", 3, "3m20s", "198.18.16.5", "node-1"]


def test_watch_tables_after_the_first_carry_no_column_definitions() -> None:
    pod = _pod("web", datetime.now(UTC))
    doc = table(POD, [pod], 43, with_columns=False)
    assert doc["columnDefinitions"] == []
    assert len(doc["rows"]) == 1
    assert table(POD, [], 44)["rows"] == []
