"""istiod benchmark: creates per second and watch-event latency with many watchers.

Each figure comes with a baseline measured in the same run against the same server:
- creates/s vs GET /version/s (the HTTP ceiling of this server and client on this machine);
- watch event latency vs the create round trip that caused the event.

Run: .venv/bin/python bench/istiod_bench.py [--db sqlite|postgres|both] [--creates N] [--watchers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import harness


def pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1d"]}]},
    }


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def rate(client: httpx.AsyncClient, total: int, concurrency: int, make) -> float:
    """Requests per second for `total` requests from `concurrency` workers."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            response = await make(client, i)
            if response.status_code >= 300:
                raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


async def watch_latency(istiod: harness.Istiod, verify: ssl.SSLContext, watchers: int, events: int) -> dict:
    headers = {"Authorization": f"Bearer {istiod.token}"}
    ns = "/api/v1/namespaces/default/pods"
    limits = httpx.Limits(max_connections=watchers + 4)
    async with httpx.AsyncClient(
        base_url=istiod.url, verify=verify, headers=headers, timeout=60, limits=limits
    ) as client:
        rv = (await client.get(ns + "?labelSelector=app%3Dwatch")).json()["metadata"]["resourceVersion"]
        sent: dict[str, float] = {}
        latencies: list[float] = []
        ready = asyncio.Event()
        opened = 0

        async def watcher() -> None:
            nonlocal opened
            seen = 0
            async with client.stream("GET", f"{ns}?watch=true&resourceVersion={rv}&labelSelector=app%3Dwatch") as resp:
                opened += 1
                if opened == watchers:
                    ready.set()
                async for line in resp.aiter_lines():
                    if not line:
                        continue
                    now = time.perf_counter()
                    name = json.loads(line)["object"]["metadata"]["name"]
                    latencies.append(now - sent[name])
                    seen += 1
                    if seen == events:
                        return

        tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
        await asyncio.wait_for(ready.wait(), 30)
        await asyncio.sleep(0.5)
        round_trips = []
        for i in range(events):
            name = f"watch-{i}"
            body = pod(name)
            body["metadata"]["labels"] = {"app": "watch"}
            sent[name] = time.perf_counter()
            await client.post(ns, json=body)
            round_trips.append(time.perf_counter() - sent[name])
            await asyncio.sleep(0.02)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return {
        "watch_p50_ms": pct(latencies, 0.5) * 1000,
        "watch_p99_ms": pct(latencies, 0.99) * 1000,
        "create_rtt_p50_ms": statistics.median(round_trips) * 1000,
        "events": len(latencies),
    }


async def run_one(istiod: harness.Istiod, creates: int, concurrency: int, watchers: int) -> dict:
    verify = ssl.create_default_context(cafile=str(istiod.ca_file))
    headers = {"Authorization": f"Bearer {istiod.token}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=istiod.url, verify=verify, headers=headers, timeout=60, limits=limits) as c:
        await c.get("/version")
        baseline = await rate(c, creates, concurrency, lambda cl, i: cl.get("/version"))
        creates_per_s = await rate(
            c, creates, concurrency, lambda cl, i: cl.post("/api/v1/namespaces/default/pods", json=pod(f"p-{i}"))
        )
    watch = await watch_latency(istiod, verify, watchers, 50)
    return {
        "creates_per_s": creates_per_s,
        "version_get_per_s": baseline,
        "create_ratio": creates_per_s / baseline,
        **watch,
        "watch_ratio_p99_to_create_rtt": watch["watch_p99_ms"] / watch["create_rtt_p50_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--creates", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--watchers", type=int, default=100)
    args = parser.parse_args()
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    results = {}
    for db in dbs:
        with tempfile.TemporaryDirectory() as tmp, harness.running_istiod(Path(tmp), db) as istiod:
            results[db] = asyncio.run(run_one(istiod, args.creates, args.concurrency, args.watchers))
    print(
        f"{'db':<9} {'creates/s':>10} {'GET/s (base)':>13} {'ratio':>6} {'watch p50':>10} {'watch p99':>10} "
        f"{'create rtt':>11} {'p99/rtt':>8}"
    )
    for db, r in results.items():
        print(
            f"{db:<9} {r['creates_per_s']:>10.0f} {r['version_get_per_s']:>13.0f} {r['create_ratio']:>6.2f} "
            f"{r['watch_p50_ms']:>8.1f}ms {r['watch_p99_ms']:>8.1f}ms {r['create_rtt_p50_ms']:>9.1f}ms "
            f"{r['watch_ratio_p99_to_create_rtt']:>8.2f}"
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
