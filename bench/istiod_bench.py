"""istiod benchmark: creates per second and watch-event latency with many watchers.

Each figure comes with a baseline measured in the same run against the same server:
- creates/s vs GET /version/s (the HTTP ceiling of this server and client on this machine);
- watch event latency vs the create round trip that caused the event.

Throughput is measured with wrk (GET /version, then POST of new Pods from bench/lua/create_pods.lua),
watch latency with asyncio watchers and a paced writer.

Run: bash bench/run.sh  (or .venv/bin/python bench/istiod_bench.py [--db sqlite|postgres|both] [--watchers N])
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
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


def wrk(istiod: harness.Istiod, path: str, seconds: int, connections: int, script: str | None = None) -> dict:
    """Requests per second and latency percentiles measured by wrk (a real load generator)."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {istiod.token}",
    ]
    if script:
        cmd += ["-s", str(Path(__file__).parent / "lua" / script)]
    cmd.append(istiod.url + path)
    env = {**os.environ, "MESH_TOKEN": istiod.token}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} failed requests:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", out))
    return {"rps": rps, "p50": lat.get("50"), "p99": lat.get("99")}


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


def run_one(istiod: harness.Istiod, seconds: int, connections: int, watchers: int) -> dict:
    baseline = wrk(istiod, "/version", seconds, connections)
    creates = wrk(istiod, "/", seconds, connections, "create_pods.lua")
    verify = ssl.create_default_context(cafile=str(istiod.ca_file))
    watch = asyncio.run(watch_latency(istiod, verify, watchers, 50))
    return {
        "creates_per_s": creates["rps"],
        "create_p50": creates["p50"],
        "create_p99": creates["p99"],
        "version_get_per_s": baseline["rps"],
        "create_ratio": creates["rps"] / baseline["rps"],
        **watch,
        "watch_ratio_p99_to_create_rtt": watch["watch_p99_ms"] / watch["create_rtt_p50_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--watchers", type=int, default=100)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is needed (apt-get install wrk, or run bench/run.sh which installs it)")
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    results = {}
    for db in dbs:
        with tempfile.TemporaryDirectory() as tmp, harness.running_istiod(Path(tmp), db) as istiod:
            results[db] = run_one(istiod, args.seconds, args.connections, args.watchers)
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
