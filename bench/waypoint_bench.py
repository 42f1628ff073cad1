"""Waypoint benchmark: 1 KB HTTP/1.1 keep-alive requests through the waypoint path, the
ztunnel-only path and the direct path, in the same run, on a real 2-node netns cluster.

`meshctl cluster up --nodes 2` in a fresh state directory, then three namespaces, each with a
client pod on node-1 and a server pod (`mesh-sample-app`) on node-2 behind a Service `server`:
- `bench-direct` (not in the mesh): client → server pod IP, no proxy;
- `bench-ztunnel` (ambient): client → Service VIP → node-1's ztunnel → HBONE → node-2's ztunnel;
- `bench-waypoint` (ambient, with a namespace waypoint on node-2): client → node-1's ztunnel →
  HBONE → the waypoint (HTTP parsed, routed, counted) → HBONE → node-2's ztunnel → server.
Each request is `POST /bytes/1024` with a 1 KB body, answered by 1 KB. Figures per path:
- closed loop over `--conns` keep-alive connections for `--seconds`: requests/s, p50/p99;
- paced at the first of `--rates` requests/s: p50/p99 and, for the waypoint path, the waypoint
  process's CPU per 1000 requests/s; then the waypoint path alone paced at each other rate (the
  CPU per 1000 rps falls as the rate rises: more requests share each loop wake-up).
The load generator runs in this process (uvloop) with its sockets made inside the client pods'
network namespaces. Goal (issue 7): ≤ 0.5 vCPU per 1000 rps, ≤ +1 ms p50 over ztunnel-only.

Run as root: .venv/bin/python bench/waypoint_bench.py [--seconds 4] [--conns 8] [--rates 500,1000]
    [--profile SECONDS]  (py-spy, when installed, records the waypoint under one more paced run)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # closed-loop and paced load, the cluster run
import ztunnel_bench as zb  # shared cluster and measurement helpers

BODY = b"q" * 1024
REQUEST = b"POST /bytes/1024 HTTP/1.1\r\nHost: server\r\nContent-Length: 1024\r\n\r\n" + BODY
PATHS = ("direct", "ztunnel", "waypoint")


@dataclass(frozen=True)
class Target:
    """Where a path's requests start (the client pod's netns) and go."""

    name: str
    client_netns: str
    address: str
    port: int


def setup(client: httpx.Client) -> list[Target]:
    targets = []
    server_cmd = [str(zb.BIN / "mesh-sample-app"), "--http", "8080"]
    for kind in PATHS:
        ns = f"bench-{kind}"
        labels = {"istio.io/dataplane-mode": "ambient"} if kind != "direct" else {}
        client.post(
            "/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
        )
        client.post(f"/api/v1/namespaces/{ns}/pods", json=zb.pod("client", ns, "node-1", ["sleep", "86400"]))
        client.post(f"/api/v1/namespaces/{ns}/pods", json=zb.pod("server", ns, "node-2", server_cmd))
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "server"},
            "spec": {"selector": {"app": "server"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }
        client.post(f"/api/v1/namespaces/{ns}/services", json=service).raise_for_status()
        c, s = zb.wait_running(client, ns, "client"), zb.wait_running(client, ns, "server")
        if kind == "direct":
            targets.append(Target(kind, zb.pod_netns(c), s["status"]["podIP"], 8080))
        else:
            vip = client.get(f"/api/v1/namespaces/{ns}/services/server").json()["spec"]["clusterIP"]
            targets.append(Target(kind, zb.pod_netns(c), vip, 80))
    return targets


def deploy_waypoint(state: Path) -> None:
    """A namespace waypoint for bench-waypoint (placed by mesh-worker), once it is ready."""
    subprocess.run(
        [
            str(zb.BIN / "meshctl"),
            "waypoint",
            "apply",
            "-n",
            "bench-waypoint",
            "--enroll-namespace",
            "--wait",
            "--kubeconfig",
            str(state / "kubeconfig"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def waypoint_pid() -> int:
    out = subprocess.run(["pgrep", "-f", "waypoint --gateway bench-waypoint/waypoint"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    if len(pids) != 1:
        raise RuntimeError(f"expected one waypoint process, found {pids}")
    return pids[0]


async def open_keepalive(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await zb.open_from(zb.PodPair(target.name, target.client_netns, target.address), target.port)


async def run(state: Path, args: argparse.Namespace) -> dict:
    with zb.api(state) as client:
        targets = setup(client)
    deploy_waypoint(state)
    pid = waypoint_pid()
    errors = (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError)
    for target in targets:
        opener = functools.partial(open_keepalive, target)
        await loadgen.until_answers(opener, REQUEST, f"the {target.name} path", errors)
        await loadgen.closed_loop(opener, REQUEST, 2, 1)  # warm up connections, certificates, pools
    rates = [float(r) for r in args.rates.split(",")]
    figures: dict = {}
    idle_before = zb.cpu_seconds(pid)
    await asyncio.sleep(args.seconds)
    figures["waypoint_idle_vcpu"] = (zb.cpu_seconds(pid) - idle_before) / args.seconds
    for target in targets:
        opener = functools.partial(open_keepalive, target)
        pace_pid = pid if target.name == "waypoint" else None
        figures[target.name] = {
            "closed": await loadgen.closed_loop(opener, REQUEST, args.conns, args.seconds),
            "paced": await loadgen.paced(opener, REQUEST, rates[0], args.seconds, pace_pid),
        }
    waypoint = functools.partial(open_keepalive, targets[-1])
    figures["waypoint_cpu"] = {f"{rates[0]:.0f}": figures["waypoint"]["paced"]}
    for rate in rates[1:]:  # the waypoint's CPU at the other rates
        figures["waypoint_cpu"][f"{rate:.0f}"] = await loadgen.paced(waypoint, REQUEST, rate, args.seconds, pid)
    figures["waypoint_rss_mb"] = zb.rss_mb(pid)
    if args.profile:  # one more paced run on the waypoint path, recorded by py-spy
        spy = loadgen.py_spy(pid, args.profile, "waypoint-cluster")
        if spy is not None:
            await loadgen.paced(waypoint, REQUEST, rates[0], args.profile + 1, None)
            spy.wait()
    return figures


def report(figures: dict, args: argparse.Namespace) -> None:
    print(
        f"waypoint benchmark (2 nodes; POST 1 KB → 1 KB, HTTP/1.1 keep-alive; {args.conns} connections closed loop,"
        f" {args.rates.split(',')[0]} rps paced)"
    )
    print(f"  {'path':<10} {'closed rps':>11} {'p50 µs':>9} {'p99 µs':>9}   {'paced p50':>10} {'p99 µs':>9}")
    for name in PATHS:
        c, p = figures[name]["closed"], figures[name]["paced"]
        print(f"  {name:<10} {c['rps']:>11.0f} {c['p50']:>9.0f} {c['p99']:>9.0f}   {p['p50']:>10.0f} {p['p99']:>9.0f}")
    d, z, w = (figures[n] for n in PATHS)
    print(
        f"  waypoint vs ztunnel-only: {w['closed']['rps'] / z['closed']['rps']:.2f}x rps, "
        f"+{w['paced']['p50'] - z['paced']['p50']:.0f} µs p50 (paced)"
    )
    print(
        f"  ztunnel-only vs direct:   {z['closed']['rps'] / d['closed']['rps']:.2f}x rps, "
        f"+{z['paced']['p50'] - d['paced']['p50']:.0f} µs p50 (paced)"
    )
    for rate, paced in figures["waypoint_cpu"].items():
        print(
            f"  waypoint CPU at {rate} rps: {paced['vcpu_per_1000rps']:.3f} vCPU per 1000 rps "
            f"({100 * (paced['system_share'] or 0):.0f} % of it in the kernel), p50 {paced['p50']:.0f} µs"
        )
    print(f"  waypoint RSS {figures['waypoint_rss_mb']:.1f} MB; idle CPU {figures['waypoint_idle_vcpu']:.3f} vCPU")
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--conns", type=int, default=8, help="keep-alive connections of the closed loop")
    parser.add_argument(
        "--rates", default="500,1000", help="paced rates (requests/s): latencies at the first, waypoint CPU at each"
    )
    parser.add_argument("--profile", type=float, default=0, help="then py-spy the waypoint this many seconds, paced")
    args = parser.parse_args()
    loadgen.on_a_new_cluster("waypoint_bench", lambda state: run(state, args), lambda figures: report(figures, args))


if __name__ == "__main__":
    main()
