"""The outbox and the Redis change stream: delayed, never lost, never duplicated, in order."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from mesh.changes import Consumer, GapError
from tests import harness

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [{"name": "c"}]}}


def stream_revisions(redis_url: str, stream: str) -> list[int]:
    r = redis.Redis.from_url(redis_url)
    try:
        return [int(fields[b"revision"]) for _id, fields in r.xrange(stream, "-", "+")]
    finally:
        r.close()


def wait_for_revision(redis_url: str, stream: str, revision: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    revisions: list[int] = []
    while time.monotonic() < deadline:
        revisions = stream_revisions(redis_url, stream)
        if revisions and revisions[-1] >= revision:
            return revisions
        time.sleep(0.1)
    raise AssertionError(f"stream stopped at {revisions[-1:]} waiting for {revision}")


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_writes_succeed_while_redis_is_down_and_arrive_in_order_later(
    db: str, redis_server: harness.RedisServer, tmp_path: Path
) -> None:
    with harness.running_istiod(tmp_path, db, redis_server.url) as istiod, istiod.client() as client:
        start = int(client.get(PODS).json()["metadata"]["resourceVersion"])
        wait_for_revision(redis_server.url, istiod.stream, start)
        redis_server.stop()
        revisions = []
        for i in range(100):
            response = client.post(PODS, json=pod(f"offline-{i}"))
            assert response.status_code == 201, response.text
            revisions.append(int(response.json()["metadata"]["resourceVersion"]))
        assert revisions == list(range(start + 1, start + 101))
        metrics = client.get("/metrics").text
        assert "istiod_outbox_lag_revisions" in metrics
        redis_server.start()  # an empty Redis: the relay refills the stream from the outbox
        seen = wait_for_revision(redis_server.url, istiod.stream, revisions[-1])
        tail = [r for r in seen if r > start]
        assert tail == revisions
        assert seen == sorted(seen) and len(seen) == len(set(seen))


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_kill_9_during_a_write_burst_loses_and_duplicates_nothing(
    db: str, redis_server: harness.RedisServer, tmp_path: Path
) -> None:
    with harness.running_istiod(tmp_path, db, redis_server.url) as istiod:
        acknowledged: list[str] = []
        stop = threading.Event()

        def burst() -> None:
            with istiod.client() as client:
                i = 0
                while not stop.is_set() and i < 5000:
                    try:
                        if client.post(PODS, json=pod(f"burst-{i}")).status_code == 201:
                            acknowledged.append(f"burst-{i}")
                    except httpx.HTTPError:
                        return  # istiod died under us
                    i += 1

        writers = [threading.Thread(target=burst) for _ in range(1)]
        for t in writers:
            t.start()
        time.sleep(1.0)
        assert istiod.proc is not None
        istiod.proc.send_signal(signal.SIGKILL)
        istiod.proc.wait()
        stop.set()
        for t in writers:
            t.join(10)
        assert len(acknowledged) > 20, "the burst did not get going before the kill"
        istiod.start()
        with istiod.client() as client:
            listing = client.get(PODS).json()
            names = {p["metadata"]["name"] for p in listing["items"]}
            assert set(acknowledged) <= names  # every acknowledged write survived
            final = int(listing["metadata"]["resourceVersion"])
        seen = wait_for_revision(redis_server.url, istiod.stream, final)
        assert seen == list(range(1, final + 1))  # contiguous: nothing missing, nothing twice


def test_consumer_resumes_and_detects_gaps(redis_server: harness.RedisServer, tmp_path: Path) -> None:
    with harness.running_istiod(tmp_path, "sqlite", redis_server.url) as istiod, istiod.client() as client:
        for i in range(5):
            client.post(PODS, json=pod(f"c-{i}"))
        final = int(client.get(PODS).json()["metadata"]["resourceVersion"])
        wait_for_revision(redis_server.url, istiod.stream, final)

        async def consume(after: int) -> list[int]:
            r = redis.asyncio.Redis.from_url(redis_server.url)
            try:
                consumer = Consumer(r, after, stream=istiod.stream, block_ms=200)
                events = await consumer.read()
                return [e.revision for e in events]
            finally:
                await r.aclose()

        assert asyncio.run(consume(final - 3)) == [final - 2, final - 1, final]
        r = redis.Redis.from_url(redis_server.url)
        r.xtrim(istiod.stream, minid=f"{final - 1}-0", approximate=False)  # lose the history before final-1
        r.close()
        with pytest.raises(GapError) as gap:
            asyncio.run(consume(final - 4))
        assert gap.value.expected == final - 3


def test_entries_carry_the_object_as_of_their_revision(redis_server: harness.RedisServer, tmp_path: Path) -> None:
    with harness.running_istiod(tmp_path, "sqlite", redis_server.url) as istiod, istiod.client() as client:
        created = client.post(PODS, json=pod("carried")).json()
        labelled = client.patch(
            f"{PODS}/carried",
            json={"metadata": {"labels": {"v": "2"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).json()
        deleted = client.delete(f"{PODS}/carried").json()
        final = int(deleted["metadata"]["resourceVersion"])
        wait_for_revision(redis_server.url, istiod.stream, final)

        async def read() -> list:
            r = redis.asyncio.Redis.from_url(redis_server.url)
            try:
                return await Consumer(r, final - 3, stream=istiod.stream, block_ms=200).read()
            finally:
                await r.aclose()

        events = asyncio.run(read())
        assert [e.op for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        assert [e.decoded() for e in events] == [created, labelled, deleted]
