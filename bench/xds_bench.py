"""mesh-xds benchmark: many simulated ztunnels, many workloads, one policy change at a time.

Measures, with real istiod, mesh-ca and mesh-xds processes and client processes of delta streams:
- initial sync time of all streams (every Address and Authorization received and ACKed);
- time from one AuthorizationPolicy write to its arrival at every stream (p50 / p99), against the
  same figure with a single stream measured in the same run (the baseline);
- bytes sent per change per stream (from mesh-xds's proxy-status), against the size of the
  changed resource, for two workload counts: it must not grow with the number of workloads;
- mesh-xds's resident memory.

Run: .venv/bin/python bench/xds_bench.py [--workloads 2000 10000] [--streams 200] [--processes 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import harness

HERE = Path(__file__).resolve().parent
APS = "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies"


def populate(istiod: harness.Istiod, count: int) -> int:
    """Create about `count` WorkloadEntries (one write each) with wrk; returns how many exist.

    (wrk calls `request()` once before sending, so the script's first name is never used.)"""
    env = {**os.environ, "MESH_TOKEN": istiod.token, "MESH_BENCH_START": "0", "MESH_BENCH_COUNT": str(count)}
    seconds = max(3, int(count / 700) + 2)
    script = HERE / "lua" / "create_workload_entries.lua"
    subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "-s", str(script), istiod.url], env=env, capture_output=True, check=True
    )
    with istiod.client() as client:
        have = len(client.get("/apis/networking.istio.io/v1/workloadentries").json()["items"])
    if have < count * 0.99:
        raise SystemExit(f"only {have} of {count} WorkloadEntries were created; raise the wrk duration")
    return have


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class Clients:
    """Client processes and the arrival times they report."""

    def __init__(self, xds: harness.MeshXds, token_file: Path, streams: int, processes: int, expect: int):
        self.arrivals: list[tuple[str, float]] = []
        self.synced: list[float] = []
        self.procs = []
        per = max(1, streams // processes)
        for index in range(processes):
            cmd = [
                sys.executable,
                str(HERE / "xds_clients.py"),
                "--address",
                xds.address,
                "--roots",
                str(xds.istiod.state_dir / "root-cert.pem"),
                "--token",
                str(token_file),
                "--streams",
                str(per),
                "--first-index",
                str(index * per),
                "--expect-addresses",
                str(expect),
                "--seconds",
                "600",
            ]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()
        self.streams = per * processes

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("synced"):
                self.synced.append(event["seconds"])
            elif event.get("policy"):
                self.arrivals.append((event["policy"], event["at"]))

    def wait_synced(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while len(self.synced) < len(self.procs):
            if time.monotonic() > deadline:
                raise SystemExit("clients did not sync in time")
            time.sleep(0.1)
        return max(self.synced)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait()


def write_policy(istiod: harness.Istiod, i: int) -> None:
    """Create the benchmark policy, or change it (each `i` gives a different source namespace)."""
    spec = {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": [f"ns-{i}"]}}]}]}
    with istiod.client() as client:
        patched = client.patch(
            f"{APS}/bench-policy", json={"spec": spec}, headers={"Content-Type": "application/merge-patch+json"}
        )
        if patched.status_code == 404:
            body = {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": "bench-policy"},
                "spec": spec,
            }
            client.post(APS, json=body).raise_for_status()


def change_latencies(istiod: harness.Istiod, clients: Clients, changes: int, first: int = 0) -> list[float]:
    """Write the policy `changes` times; for each write, every stream's arrival delay."""
    delays: list[float] = []
    for i in range(first, first + changes):
        before = len(clients.arrivals)
        written = time.time()
        write_policy(istiod, i)
        deadline = time.monotonic() + 30
        while len(clients.arrivals) < before + clients.streams and time.monotonic() < deadline:
            time.sleep(0.01)
        delays += [at - written for _, at in clients.arrivals[before:]]
        time.sleep(0.3)
    return delays


def bytes_per_change(xds: harness.MeshXds, istiod: harness.Istiod, clients: Clients) -> float:
    before = sum(s["bytes_sent"] for s in xds.syncz())
    change_latencies(istiod, clients, 1, first=1000)
    after = sum(s["bytes_sent"] for s in xds.syncz())
    return (after - before) / clients.streams


def run(workloads: int, streams: int, processes: int, changes: int) -> dict:
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_istiod(Path(tmp), "sqlite") as istiod,
        harness.running_ca(istiod),
    ):
        token = harness.create_node(istiod, "node-1")
        with istiod.client() as client:  # node-1 hosts a pod of "default", so it enforces its policies
            anchor = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "anchor"},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]},
            }
            client.post("/api/v1/namespaces/default/pods", json=anchor).raise_for_status()
        token_file = Path(tmp) / "node-1.token"
        token_file.write_text(token)
        workloads = populate(istiod, workloads)
        started = time.perf_counter()
        with harness.running_xds(istiod) as xds:
            xds_ready = time.perf_counter() - started
            single = Clients(xds, token_file, 1, 1, workloads)
            single.wait_synced(600)
            baseline = change_latencies(istiod, single, changes, first=100)
            single.stop()
            many = Clients(xds, token_file, streams, processes, workloads)
            sync = many.wait_synced(900)
            delays = change_latencies(istiod, many, changes)
            per_change = bytes_per_change(xds, istiod, many)
            assert xds.proc is not None
            memory = rss_mb(xds.proc.pid)
            many.stop()
    return {
        "workloads": workloads,
        "streams": many.streams,
        "xds_ready_s": xds_ready,
        "initial_sync_s": sync,
        "p50_ms": pct(delays, 0.5) * 1000,
        "p99_ms": pct(delays, 0.99) * 1000,
        "baseline_p50_ms": pct(baseline, 0.5) * 1000,
        "bytes_per_change": per_change,
        "rss_mb": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--changes", type=int, default=5)
    args = parser.parse_args()
    rows = [run(w, args.streams, args.processes, args.changes) for w in args.workloads]
    print(
        f"{'workloads':>9} {'streams':>7} {'xds ready':>9} {'sync all':>9} {'p50':>8} {'p99':>8} "
        f"{'1-stream p50':>12} {'bytes/change':>12} {'xds RSS':>8}"
    )
    for r in rows:
        print(
            f"{r['workloads']:>9} {r['streams']:>7} {r['xds_ready_s']:>8.1f}s {r['initial_sync_s']:>8.1f}s "
            f"{r['p50_ms']:>6.0f}ms {r['p99_ms']:>6.0f}ms {r['baseline_p50_ms']:>10.0f}ms "
            f"{r['bytes_per_change']:>12.0f} {r['rss_mb']:>6.0f}MB"
        )
    if len(rows) > 1:
        growth = rows[-1]["bytes_per_change"] / max(rows[0]["bytes_per_change"], 1)
        print(f"bytes per change, largest store / smallest store: {growth:.2f}")


if __name__ == "__main__":
    main()
