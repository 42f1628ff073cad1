"""Pod start latency on a real local cluster: Pod created through the API → Running with an IP.

Baseline in the same run: starting the same command in a fresh network namespace by hand
(`ip netns add` + `ip netns exec ... python3 -c pass`), which is the floor of what a runtime does.

Run (root): .venv/bin/python bench/runtime_bench.py [--pods 30]
"""

from __future__ import annotations

import argparse
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

MESHCTL = str(harness.VENV_BIN / "meshctl")


def baseline(runs: int) -> list[float]:
    out = []
    for i in range(runs):
        name = f"mesh-bench-{i}"
        started = time.perf_counter()
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", "pass"], check=True)
        out.append(time.perf_counter() - started)
        subprocess.run(["ip", "netns", "delete", name], check=True)
    return out


def pod_starts(state: Path, count: int) -> list[float]:
    token = (state / "admin-token").read_text().strip()
    verify = ssl.create_default_context(cafile=str(state / "istiod-ca.pem"))
    latencies = []
    with httpx.Client(
        base_url="https://198.19.255.1:6443", verify=verify, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        for i in range(count):
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"bench-{i}"},
                "spec": {"nodeName": f"node-{1 + i % 2}", "containers": [{"name": "c", "command": ["sleep", "600"]}]},
            }
            started = time.perf_counter()
            client.post("/api/v1/namespaces/default/pods", json=body).raise_for_status()
            while True:
                status = client.get(f"/api/v1/namespaces/default/pods/bench-{i}").json().get("status") or {}
                if status.get("phase") == "Running" and status.get("podIP"):
                    break
                if time.perf_counter() - started > 60:
                    raise SystemExit(f"bench-{i} did not start: {status}")
                time.sleep(0.01)
            latencies.append(time.perf_counter() - started)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=30)
    args = parser.parse_args()
    base = baseline(10)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        subprocess.run([MESHCTL, "cluster", "up", "--nodes", "2", "--state-dir", tmp], check=True, capture_output=True)
        try:
            starts = pod_starts(state, args.pods)
        finally:
            subprocess.run([MESHCTL, "cluster", "down", "--state-dir", tmp], capture_output=True)

    def fmt(values: list[float]) -> str:
        values = sorted(values)
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
        return f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"

    print(f"netns + exec by hand (baseline): {fmt(base)}")
    print(f"pod create -> Running with an IP: {fmt(starts)}")
    print(f"ratio (p50): {statistics.median(starts) / statistics.median(base):.1f}x")


if __name__ == "__main__":
    main()
