"""Watch semantics over raw HTTP: resume, selectors, bookmarks, 410 Gone, restarts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"
MERGE = {"Content-Type": "application/merge-patch+json"}


def pod(name: str, **labels: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c"}]},
    }


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def small_history(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Istiod]:
    """istiod keeping only 100 revisions of history, so old revisions expire quickly."""
    tmp = tmp_path_factory.mktemp("watch")
    args = ["--watch-history", "100", "--bookmark-interval", "0.5"]
    with harness.running_istiod(tmp, request.param, extra_args=args) as node:
        yield node


def collect(istiod: harness.Istiod, query: str, until, timeout: float = 10) -> list[dict]:
    """Open a watch and gather events until `until(events)` is true."""
    events: list[dict] = []
    with istiod.client() as client, client.stream("GET", f"{PODS}?watch=true&{query}", timeout=timeout) as response:
        assert response.status_code == 200
        deadline = time.monotonic() + timeout
        for line in response.iter_lines():
            if line:
                events.append(json.loads(line))
            if until(events) or time.monotonic() > deadline:
                break
    return events


def test_resume_from_a_revision_sends_only_newer_events(small_history: harness.Istiod) -> None:
    with small_history.client() as client:
        first = client.post(PODS, json=pod("w1", app="w")).json()["metadata"]["resourceVersion"]
        client.post(PODS, json=pod("w2", app="w"))
        client.delete(f"{PODS}/w1")
    events = collect(small_history, f"resourceVersion={first}", lambda e: len(e) >= 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w2"), ("DELETED", "w1")]
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) > int(
        events[0]["object"]["metadata"]["resourceVersion"]
    )
    with small_history.client() as client:
        client.delete(f"{PODS}/w2")


def test_without_a_revision_current_objects_come_first_as_added(small_history: harness.Istiod) -> None:
    with small_history.client() as client:
        client.post(PODS, json=pod("now-a", app="now"))
        client.post(PODS, json=pod("now-b", app="now"))
    events = collect(small_history, "labelSelector=app%3Dnow", lambda e: len(e) >= 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "now-a"), ("ADDED", "now-b")]
    with small_history.client() as client:
        client.request("DELETE", PODS + "?labelSelector=app%3Dnow")


def test_objects_entering_and_leaving_a_selector_are_added_and_deleted(small_history: harness.Istiod) -> None:
    with small_history.client() as client:
        start = client.post(PODS, json=pod("sel", tier="back")).json()["metadata"]["resourceVersion"]

        def change() -> None:
            time.sleep(0.5)
            with small_history.client() as c:
                c.patch(f"{PODS}/sel", json={"metadata": {"labels": {"tier": "front"}}}, headers=MERGE)
                c.patch(f"{PODS}/sel", json={"metadata": {"labels": {"x": "1"}}}, headers=MERGE)
                c.patch(f"{PODS}/sel", json={"metadata": {"labels": {"tier": "back"}}}, headers=MERGE)

        t = threading.Thread(target=change)
        t.start()
        events = collect(small_history, f"resourceVersion={start}&labelSelector=tier%3Dfront", lambda e: len(e) >= 3)
        t.join()
        assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        client.delete(f"{PODS}/sel")


def test_bookmarks_only_when_allowed(small_history: harness.Istiod) -> None:
    with small_history.client() as client:
        rv = client.get(PODS).json()["metadata"]["resourceVersion"]
    events = collect(small_history, f"resourceVersion={rv}&allowWatchBookmarks=true", lambda e: len(e) >= 1)
    assert events[0]["type"] == "BOOKMARK"
    assert events[0]["object"]["kind"] == "Pod" and int(events[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)
    quiet = collect(small_history, f"resourceVersion={rv}&timeoutSeconds=1", lambda e: False, timeout=3)
    assert quiet == []


def test_a_revision_older_than_the_history_gets_410_expired(small_history: harness.Istiod) -> None:
    with small_history.client() as client:
        old = client.get(PODS).json()["metadata"]["resourceVersion"]
        for i in range(110):
            client.post(PODS, json=pod(f"churn-{i}", app="churn"))
        client.request("DELETE", PODS + "?labelSelector=app%3Dchurn")
        for i in range(110):
            client.post(PODS, json=pod(f"churn2-{i}", app="churn"))
        client.request("DELETE", PODS + "?labelSelector=app%3Dchurn")
    events = collect(small_history, f"resourceVersion={old}", lambda e: len(e) >= 1)
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"].startswith(f"too old resource version: {old} (")


def test_watch_resumes_across_an_istiod_restart(tmp_path: Path) -> None:
    with harness.running_istiod(tmp_path, "sqlite") as istiod:
        with istiod.client() as client:
            rv = client.post(PODS, json=pod("before", app="r")).json()["metadata"]["resourceVersion"]
            client.post(PODS, json=pod("after", app="r"))
        istiod.stop()
        istiod.start()
        events = collect(istiod, f"resourceVersion={rv}", lambda e: len(e) >= 1)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "after")]
