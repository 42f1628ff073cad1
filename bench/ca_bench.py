"""mesh-ca benchmark: CSRs signed per second and latency over gRPC at 1, 8 and 64 concurrent calls.

Baselines measured in the same run:
- GetTrustBundle calls/s at the same concurrency: the same server, TLS channel and auth-free
  path, so the ratio shows what checking, authorizing and signing cost on top of gRPC;
- check + sign in-process on one core (no gRPC): the crypto ceiling.

Run: .venv/bin/python bench/ca_bench.py [--seconds N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mesh.certs.ca_client import CaClient
from mesh.certs.csr import make_csr
from mesh.identity import Identity
from services.ca.authority import SigningCA, issue, make_root
from services.ca.csr_checks import check_csr
from tests import harness

SLEEP = Identity("cluster.local", "default", "sleep")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def load(ca: harness.MeshCa, token: str, csrs: list[str], concurrency: int, seconds: float, sign: bool) -> dict:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with CaClient(ca.address, ca.roots_pem, token) as client:
        await client.trust_bundle()

        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                if sign:
                    await client.create_certificate(csrs[i % len(csrs)], 3600, str(SLEEP))
                else:
                    await client.trust_bundle()
                latencies.append(time.perf_counter() - started)
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "rate": len(latencies) / elapsed,
        "p50": pct(latencies, 0.5) * 1000,
        "p99": pct(latencies, 0.99) * 1000,
        "elapsed": elapsed,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (clock ticks of 1/100 s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_process_rate(csrs: list[str], seconds: float = 2.0) -> float:
    cert, key = make_root("cluster.local", datetime.now(UTC))
    ca = SigningCA(cert, key)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        issue(ca, check_csr(csrs[count % len(csrs)], "cluster.local"), 3600, datetime.now(UTC))
        count += 1
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 64])
    args = parser.parse_args()
    csrs = [make_csr(SLEEP).csr_pem for _ in range(64)]
    ceiling = in_process_rate(csrs)
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_istiod(Path(tmp), "sqlite") as istiod,
        harness.running_ca(istiod) as ca,
    ):
        token = harness.create_node(istiod, "node-1")
        with istiod.client() as client:
            sleep = {"serviceAccountName": "sleep", "nodeName": "node-1", "containers": [{"name": "c"}]}
            client.post(
                "/api/v1/namespaces/default/pods",
                json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleep"}, "spec": sleep},
            )
        assert ca.proc is not None
        for c in args.concurrency:
            cpu = cpu_seconds(ca.proc.pid)
            signed = asyncio.run(load(ca, token, csrs, c, args.seconds, sign=True))
            signed["cores"] = (cpu_seconds(ca.proc.pid) - cpu) / signed["elapsed"]
            base = asyncio.run(load(ca, token, csrs, c, args.seconds, sign=False))
            rows.append((c, signed, base))
    print(f"in-process check+sign on one core: {ceiling:.0f}/s")
    print(
        f"{'clients':>7} {'CSRs/s':>8} {'CA cores':>8} {'per core':>8} {'p50':>8} {'p99':>8} "
        f"{'bundle/s (base)':>16} {'ratio':>6} {'vs crypto':>9}"
    )
    for c, s, b in rows:
        print(
            f"{c:>7} {s['rate']:>8.0f} {s['cores']:>8.2f} {s['rate'] / max(s['cores'], 0.01):>8.0f} "
            f"{s['p50']:>6.1f}ms {s['p99']:>6.1f}ms {b['rate']:>16.0f} "
            f"{s['rate'] / b['rate']:>6.2f} {s['rate'] / ceiling:>9.2f}"
        )
    print(f"median CSRs/s over concurrencies: {statistics.median(r[1]['rate'] for r in rows):.0f}")


if __name__ == "__main__":
    main()
