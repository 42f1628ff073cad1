"""Pod records: (de)serialisation and the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataplane.runtime.records import ContainerRecord, PodRecord, RecordStore
from dataplane.runtime.status import Terminated

pytestmark = pytest.mark.unit


def record() -> PodRecord:
    rec = PodRecord(
        uid="0b7c2f1e-1111-2222-3333-444455556666",
        namespace="default",
        name="web",
        netns="mesh-pod-0b7c2f1e1111",
        start_time="2024-01-01T00:00:00Z",
        cni_conf={"cniVersion": "1.0.0", "name": "mesh", "plugins": [{"type": "bridge"}]},
        cni_result={"ips": [{"address": "198.18.1.2/24"}]},
    )
    rec.containers["app"] = ContainerRecord(
        "app",
        pid=1234,
        start_ticks=99,
        started_at="2024-01-01T00:00:01Z",
        restart_count=3,
        last_terminated=Terminated(1, "Error", finished_at="2024-01-01T00:00:00Z", container_id="mesh://1200"),
        backoff=40.0,
    )
    rec.containers["job"] = ContainerRecord("job", terminated=Terminated(0, "Completed", signal=None))
    return rec


def test_round_trip() -> None:
    rec = record()
    again = PodRecord.from_json(rec.to_json())
    assert again == rec
    assert again.pids() == [(1234, 99)]


def test_container_created_on_first_use() -> None:
    rec = record()
    assert rec.container("new") is rec.containers["new"] and rec.containers["new"].restart_count == 0
    assert rec.container("app").pid == 1234


def test_unknown_version_is_refused() -> None:
    raw = record().to_json()
    raw["version"] = 99
    with pytest.raises(ValueError, match="version"):
        PodRecord.from_json(raw)


def test_store_save_load_remove(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "pods")
    assert store.load_all() == []
    rec = record()
    store.save(rec)
    assert store.path(rec.uid).exists() and not list((tmp_path / "pods").glob("*.tmp"))
    assert store.load(rec.uid) == rec
    rec.containers["app"].restart_count = 4
    store.save(rec)
    assert store.load_all() == [rec]
    store.remove(rec.uid)
    store.remove(rec.uid)  # twice is fine
    assert store.load(rec.uid) is None


def test_unreadable_records_are_skipped_and_kept(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.save(record())
    (tmp_path / "broken.json").write_text("{")
    assert [r.name for r in store.load_all()] == ["web"]
    assert (tmp_path / "broken.json").exists()
