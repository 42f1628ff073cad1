"""Soak benchmark: `--minutes` of churn with traffic on a real 2-node netns cluster, the memory
and open file descriptors of ztunnel, the waypoint, istiod and mesh-xds sampled over time and
plotted to a PNG.

`meshctl cluster up --nodes 2` in a fresh state directory; namespace `soak` (ambient, with a
namespace waypoint): two server pods (`mesh-sample-app`) behind the Service `web`, a client pod.
For the whole run:
- traffic: HTTP GETs from inside the client pod to the Service's VIP (through both ztunnels and
  the waypoint), `--rps` per second over keep-alive connections, each answer checked;
- pod churn: every `--churn` seconds a pod is created (alternating nodes, enrolled) and the one
  made three rounds before is deleted;
- policy churn: every fourth round an AuthorizationPolicy (an ALLOW covering the client and the
  waypoint) is created or deleted, so mesh-xds and both proxies keep re-translating.
Every `--interval` seconds: VmRSS and the number of open descriptors of each process. The run
writes `bench/results/soak-{time}.json` and `.png` (matplotlib, `pip install -e .[bench]`) and
prints the first and last samples, the peaks, and the request success rate.

Run as root: .venv/bin/python bench/soak_bench.py [--minutes 10] [--interval 5] [--rps 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # the cluster run
import waypoint_bench as wb  # open_keepalive / Target for requests from inside a pod
import ztunnel_bench as zb  # shared cluster and measurement helpers

RESULTS = Path(__file__).resolve().parent / "results"
NS = "soak"
REQUEST = b"GET /bytes/256 HTTP/1.1\r\nHost: web\r\n\r\n"


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def processes(state: Path) -> dict[str, int]:
    """The PIDs to watch: the control plane and ztunnels from the cluster state, the waypoint by its command line."""
    raw = json.loads((state / "cluster.json").read_text())
    wanted = {"istiod", "mesh-xds", "node-1/ztunnel", "node-2/ztunnel"}
    found = {p["name"]: p["pid"] for p in raw["processes"] if p["name"] in wanted}
    out = subprocess.run(["pgrep", "-f", f"waypoint --gateway {NS}/waypoint"], capture_output=True, text=True)
    pids = out.stdout.split()
    if len(pids) != 1:
        raise RuntimeError(f"expected one waypoint process, found {pids}")
    found["waypoint"] = int(pids[0])
    return found


def setup(client: httpx.Client, state: Path) -> wb.Target:
    labels = {"istio.io/dataplane-mode": "ambient"}
    client.post(
        "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": labels}}
    )
    server = [str(zb.BIN / "mesh-sample-app"), "--http", "8080"]
    for i, node in enumerate(("node-1", "node-2")):
        body = zb.pod(f"web-{i}", NS, node, server)
        body["metadata"]["labels"] = {"app": "web"}
        client.post(f"/api/v1/namespaces/{NS}/pods", json=body).raise_for_status()
    client.post(f"/api/v1/namespaces/{NS}/pods", json=zb.pod("client", NS, "node-1", ["sleep", "86400"]))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    client.post(f"/api/v1/namespaces/{NS}/services", json=service).raise_for_status()
    pod = zb.wait_running(client, NS, "client")
    for i in range(2):
        zb.wait_running(client, NS, f"web-{i}")
    subprocess.run(
        [
            str(zb.BIN / "meshctl"),
            "waypoint",
            "apply",
            "-n",
            NS,
            "--enroll-namespace",
            "--wait",
            "--kubeconfig",
            str(state / "kubeconfig"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    vip = client.get(f"/api/v1/namespaces/{NS}/services/web").json()["spec"]["clusterIP"]
    return wb.Target("soak", zb.pod_netns(pod), vip, 80)


async def traffic(target: wb.Target, rps: float, stop: float, counts: dict[str, int]) -> None:
    """Paced GETs over 4 keep-alive connections; a failed connection is replaced and counted."""
    conns = 4
    interval = conns / rps

    async def drive(offset: float) -> None:
        stream = None
        n = 0
        begin = time.monotonic() + offset
        while (due := begin + n * interval) < stop:
            n += 1
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            try:
                if stream is None:
                    stream = await wb.open_keepalive(target)
                reader, writer = stream
                writer.write(REQUEST)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                length = int(
                    next(
                        (
                            line.split(b":", 1)[1]
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        b"0",
                    )
                )
                await asyncio.wait_for(reader.readexactly(length), 5)
                counts["ok" if head.startswith(b"HTTP/1.1 200") else "bad"] += 1
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                counts["failed"] += 1
                if stream is not None:
                    stream[1].close()
                stream = None

    await asyncio.gather(*(drive(i * interval / conns) for i in range(conns)))


async def churn(client: httpx.AsyncClient, period: float, stop: float, counts: dict[str, int]) -> None:
    policy_url = f"/apis/security.istio.io/v1/namespaces/{NS}/authorizationpolicies"
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "soak-allow"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "action": "ALLOW",
            "rules": [{"from": [{"source": {"namespaces": [NS]}}]}],
        },
    }
    made: list[str] = []
    i = 0
    while time.monotonic() < stop:
        body = zb.pod(f"churn-{i}", NS, f"node-{1 + i % 2}", ["sleep", "86400"])
        await client.post(f"/api/v1/namespaces/{NS}/pods", json=body)
        made.append(body["metadata"]["name"])
        if len(made) > 3:
            await client.delete(f"/api/v1/namespaces/{NS}/pods/{made.pop(0)}")
        if i % 4 == 0:
            if (i // 4) % 2 == 0:
                await client.post(policy_url, json=policy)
            else:
                await client.delete(f"{policy_url}/soak-allow")
            counts["policy_changes"] += 1
        counts["pods_created"] += 1
        i += 1
        await asyncio.sleep(period)


async def sample(pids: dict[str, int], interval: float, stop: float, samples: list[dict]) -> None:
    start = time.monotonic()
    while True:
        samples.append(
            {
                "t": round(time.monotonic() - start, 1),
                **{f"{name}.rss_mb": round(zb.rss_mb(pid), 1) for name, pid in pids.items()},
                **{f"{name}.fds": fd_count(pid) for name, pid in pids.items()},
            }
        )
        if time.monotonic() >= stop:
            return
        await asyncio.sleep(min(interval, max(0.0, stop - time.monotonic())))


def plot(samples: list[dict], names: list[str], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak_bench: matplotlib is not installed (pip install -e .[bench]); no PNG", file=sys.stderr)
        return False
    t = [s["t"] / 60 for s in samples]
    fig, (rss, fds) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name in names:
        rss.plot(t, [s[f"{name}.rss_mb"] for s in samples], label=name)
        fds.plot(t, [s[f"{name}.fds"] for s in samples], label=name)
    rss.set_ylabel("RSS (MB)")
    fds.set_ylabel("open file descriptors")
    fds.set_xlabel("minutes")
    rss.legend(loc="upper left", fontsize="small")
    rss.set_title("soak: pod and policy churn with traffic")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


async def run(state: Path, args: argparse.Namespace) -> dict:
    with zb.api(state) as client:
        target = setup(client, state)
    pids = processes(state)
    stop = time.monotonic() + args.minutes * 60
    counts = {"ok": 0, "bad": 0, "failed": 0, "pods_created": 0, "policy_changes": 0}
    samples: list[dict] = []
    token = (state / "admin-token").read_text().strip()
    async with httpx.AsyncClient(
        base_url="https://198.19.255.1:6443",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(state / "istiod-ca.pem"),
        timeout=30,
    ) as api:
        await asyncio.gather(
            traffic(target, args.rps, stop, counts),
            churn(api, args.churn, stop, counts),
            sample(pids, args.interval, stop, samples),
        )
    return {"pids": pids, "counts": counts, "samples": samples}


def report(result: dict, args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = list(result["pids"])
    (RESULTS / f"soak-{stamp}.json").write_text(json.dumps(result, indent=1))
    plotted = plot(result["samples"], names, RESULTS / f"soak-{stamp}.png")
    first, last = result["samples"][0], result["samples"][-1]
    c = result["counts"]
    total = c["ok"] + c["bad"] + c["failed"]
    print(
        f"soak benchmark: {args.minutes:g} min, {c['pods_created']} pods created, {c['policy_changes']} policy changes,"
        f" {total} requests ({100 * c['ok'] / max(total, 1):.2f}% answered 200, {c['failed']} failed)"
    )
    print(
        f"  {'process':<16} {'RSS start':>10} {'RSS end':>9} {'RSS peak':>9}"
        f" {'FDs start':>10} {'FDs end':>8} {'FDs peak':>9}"
    )
    for name in names:
        peak_rss = max(s[f"{name}.rss_mb"] for s in result["samples"])
        peak_fds = max(s[f"{name}.fds"] for s in result["samples"])
        print(
            f"  {name:<16} {first[f'{name}.rss_mb']:>10.1f} {last[f'{name}.rss_mb']:>9.1f} {peak_rss:>9.1f}"
            f" {first[f'{name}.fds']:>10} {last[f'{name}.fds']:>8} {peak_fds:>9}"
        )
    print(
        f"  samples: {RESULTS / f'soak-{stamp}.json'}" + (f"; plot: {RESULTS / f'soak-{stamp}.png'}" if plotted else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10, help="how long to soak (10 to 60)")
    parser.add_argument("--interval", type=float, default=5, help="seconds between samples")
    parser.add_argument("--rps", type=float, default=50, help="request rate of the traffic")
    parser.add_argument("--churn", type=float, default=2, help="seconds between churn rounds")
    args = parser.parse_args()
    if not 0 < args.minutes <= 60:
        sys.exit("soak_bench: --minutes must be in (0, 60]")
    loadgen.on_a_new_cluster("soak_bench", lambda state: run(state, args), lambda result: report(result, args))


if __name__ == "__main__":
    main()
