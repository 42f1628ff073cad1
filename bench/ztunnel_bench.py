"""ztunnel benchmark: pods on two nodes of a real netns cluster, the mesh path against the direct
path in the same run.

`meshctl cluster up --nodes 2` in a fresh state directory, then:
- namespace `bench-direct` (not in the mesh): client pod on node-1, server pod on node-2;
- namespace `bench-mesh` (ambient): the same pair, so its traffic goes client pod → node-1's
  ztunnel (15001) → HBONE mTLS → node-2's ztunnel (15008) → server pod.
The load generator runs in this process with its sockets created inside the client pods' netns
(as `kubectl exec` would), under uvloop. Figures, each for both paths (the median of `--repeats`
runs, the paths alternating):
- bulk MB/s: 256 KiB writes for `--seconds`, then FIN and the sink's byte count;
- 1-byte round trip p50/p99 (µs) over one connection;
- new connections per second (connect, 1-byte echo, close; 16 at a time);
- 1 KB request-response at a paced rate over 4 connections: achieved rps, p50/p99, and the CPU of
  the two ztunnels expressed per 1000 rps;
- ztunnel RSS idle, and with `--pods` extra pods enrolled and `--open` connections held open.

Run as root: .venv/bin/python bench/ztunnel_bench.py [--seconds 4] [--rate 1000] [--repeats 3] [--pods 100]
[--open 1000]
Only the cluster's own namespaces carry traffic; `meshctl cluster down` runs in a finally.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mesh import admin_client, netns  # noqa: E402
from mesh.memory_report import resident_kb  # noqa: E402

BIN = Path(sys.executable).parent
PODAPP = str(ROOT / "cli" / "sample_app.py")
ECHO, SINK = 9000, 9100
WRITE = 256 << 10
CLK_TCK = os.sysconf("SC_CLK_TCK")
NODE_IP = {"node-1": "198.19.255.11", "node-2": "198.19.255.12"}


@dataclass(frozen=True)
class PodPair:
    """Where a path's traffic starts (the client pod's netns) and goes (the server pod's IP)."""

    name: str
    client_netns: str
    server_ip: str


def meshctl(*args: str) -> None:
    subprocess.run([str(BIN / "meshctl"), *args], check=True, capture_output=True, timeout=300)


def api(state: Path) -> httpx.Client:
    token = (state / "admin-token").read_text().strip()
    verify = ssl.create_default_context(cafile=str(state / "istiod-ca.pem"))
    return httpx.Client(
        base_url="https://198.19.255.1:6443", headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=30
    )


def pod(name: str, namespace: str, node: str, command: list[str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "command": command}]},
    }


def wait_running(client: httpx.Client, namespace: str, name: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/namespaces/{namespace}/pods/{name}").json()
        if (body.get("status") or {}).get("phase") == "Running" and body["status"].get("podIP"):
            return body
        time.sleep(0.2)
    raise RuntimeError(f"pod {namespace}/{name} is not running")


def pod_netns(body: dict) -> str:
    return f"mesh-pod-{body['metadata']['uid'].replace('-', '')[:12]}"


def setup(client: httpx.Client) -> list[PodPair]:
    """The two namespaces and their client/server pairs; the mesh one enrolled."""
    server_cmd = [sys.executable, PODAPP, "--echo", str(ECHO), "--sink", str(SINK)]
    paths = []
    for kind in ("direct", "mesh"):
        ns = f"bench-{kind}"
        labels = {"istio.io/dataplane-mode": "ambient"} if kind == "mesh" else {}
        meta = {"name": ns, "labels": labels}
        client.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
        client.post(f"/api/v1/namespaces/{ns}/pods", json=pod("client", ns, "node-1", ["sleep", "86400"]))
        client.post(f"/api/v1/namespaces/{ns}/pods", json=pod("server", ns, "node-2", server_cmd))
        c, s = wait_running(client, ns, "client"), wait_running(client, ns, "server")
        paths.append(PodPair(kind, pod_netns(c), s["status"]["podIP"]))
    return paths


def extra_pods(client: httpx.Client, count: int) -> None:
    """`count` more enrolled pods (a sleep each), half on each node."""
    for i in range(count):
        body = pod(f"idle-{i}", "bench-mesh", f"node-{1 + i % 2}", ["sleep", "86400"])
        client.post("/api/v1/namespaces/bench-mesh/pods", json=body).raise_for_status()
    for i in range(count):
        wait_running(client, "bench-mesh", f"idle-{i}", timeout=300)


def ztunnel_admin(node: str, path: str, timeout: float = 10) -> dict:
    """GET on node's ztunnel admin port: 127.0.0.1:15000 inside the node's namespace."""
    status, body = admin_client.request(15000, path, namespace=f"mesh-{node}", timeout=timeout)
    if status != 200:
        raise RuntimeError(f"{node}'s ztunnel answered {path} with {status}")
    return json.loads(body)


def served_pods(node: str) -> int:
    return len(ztunnel_admin(node, "/config_dump")["pods"])


# --- load ---------------------------------------------------------------------------------------


async def open_from(path: PodPair, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = netns.socket_in(path.client_netns)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (path.server_ip, port)), 10)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=1 << 20)


async def echo_once(path: PodPair) -> bool:
    try:
        reader, writer = await open_from(path, ECHO)
        writer.write(b"x")
        ok = await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
        writer.close()
        return ok
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False


async def bulk(path: PodPair, seconds: float) -> float:
    reader, writer = await open_from(path, SINK)
    chunk = b"\0" * WRITE
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        writer.write(chunk)
        await writer.drain()
    writer.write_eof()
    count = int((await reader.readline()).strip())
    elapsed = time.perf_counter() - start
    writer.close()
    return count / elapsed / 1e6


async def until_served(paths: list[PodPair], timeout: float = 30) -> None:
    """Wait until every path echoes: the server pod runs and, on the mesh path, both ztunnels
    know both pods (a pod can be Running before its workload reaches the ztunnels)."""
    deadline = time.monotonic() + timeout
    for path in paths:
        while not await echo_once(path):
            if time.monotonic() > deadline:
                sys.exit(f"ztunnel_bench: the {path.name} path does not echo after {timeout:.0f} s")
            await asyncio.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def rtt(path: PodPair, count: int) -> tuple[float, float]:
    reader, writer = await open_from(path, ECHO)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        writer.write(b"x")
        await reader.readexactly(1)
        samples.append((time.perf_counter() - start) * 1e6)
    writer.close()
    return percentile(samples, 0.5), percentile(samples, 0.99)


async def connection_rate(path: PodPair, seconds: float, concurrency: int = 16) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            if await echo_once(path):
                done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_mb(pid: int) -> float:
    return resident_kb(pid)["VmRSS"] / 1024


async def request_response(path: PodPair, rate: float, seconds: float, pids: list[int], conns: int = 4) -> dict:
    """1 KB requests answered by 1 KB (the echo), paced at `rate` in total over `conns` connections."""
    streams = [await open_from(path, ECHO) for _ in range(conns)]
    payload = b"r" * 1024
    for reader, writer in streams:  # each tunnel set up end to end before the CPU is read
        writer.write(payload)
        await reader.readexactly(len(payload))
    latencies: list[float] = []
    interval = conns / rate

    async def drive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, offset: float) -> None:
        start = time.perf_counter() + offset
        n = 0
        while (due := start + n * interval) < begin + seconds:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            writer.write(payload)
            await reader.readexactly(len(payload))
            latencies.append((time.perf_counter() - sent) * 1e6)
            n += 1

    split_before = [cpu_split(pid) for pid in pids]
    begin = time.perf_counter()
    await asyncio.gather(*(drive(r, w, i * interval / conns) for i, (r, w) in enumerate(streams)))
    elapsed = time.perf_counter() - begin
    splits = [(u1 - u0, s1 - s0) for (u0, s0), (u1, s1) in zip(split_before, map(cpu_split, pids), strict=True)]
    cpu = sum(u + s for u, s in splits)
    for _, writer in streams:
        writer.close()
    achieved = len(latencies) / elapsed
    return {
        "rps": achieved,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "vcpu_per_1000rps": (cpu / elapsed) / (achieved / 1000) if achieved else float("nan"),
        # per ztunnel (node-1, node-2): (user, system) vCPU per 1000 rps
        "per_ztunnel": [
            (u / elapsed / (achieved / 1000), s / elapsed / (achieved / 1000)) if achieved else (0.0, 0.0)
            for u, s in splits
        ],
    }


async def hold_open(path: PodPair, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for i in range(0, count, 50):
        batch = await asyncio.gather(*(open_from(path, ECHO) for _ in range(min(50, count - i))))
        writers += [w for _, w in batch]
    for writer in writers:  # one echo each, so every tunnel is really up
        writer.write(b"x")
    return writers


# --- the run ------------------------------------------------------------------------------------


def ztunnel_pids(state: Path) -> list[int]:
    raw = json.loads((state / "cluster.json").read_text())
    return [p["pid"] for p in raw["processes"] if p["name"].endswith("/ztunnel")]


def row(name: str, direct: float, mesh: float, unit: str, better_high: bool = True) -> str:
    ratio = mesh / direct if direct else float("nan")
    label = f"{ratio:.2f}x" if better_high else f"+{mesh - direct:.0f} {unit}"
    return f"  {name:<28} direct {direct:>10.1f}   mesh {mesh:>10.1f} {unit:<6} ({label})"


async def measure(paths: list[PodPair], args: argparse.Namespace, pids: list[int]) -> dict:
    """Each figure `--repeats` times, the two paths alternating (so both see the same moments of
    a noisy machine), and the median run reported: one run's p50 or CPU moves by ±10 % here."""
    for path in paths:
        deadline = time.monotonic() + 30
        while not await echo_once(path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {path.name} path does not answer")
            await asyncio.sleep(0.2)
    for path in paths:
        await bulk(path, 1)  # warm up (the mesh path's HBONE connection and certificates)
    runs: dict[str, dict[str, list]] = {p.name: {"bulk": [], "rtt": [], "reqresp": []} for p in paths}
    for _ in range(args.repeats):
        for path in paths:
            mine = runs[path.name]
            mine["bulk"].append(await bulk(path, args.seconds))
            mine["rtt"].append(await rtt(path, args.rtts))
            mine["reqresp"].append(await request_response(path, args.rate, args.seconds, pids))
    out: dict = {}
    for path in paths:
        mine = runs[path.name]
        by_cpu = sorted(mine["reqresp"], key=lambda r: (r["vcpu_per_1000rps"], r["p50"]))
        out[path.name] = {
            "bulk_mb_s": statistics.median(mine["bulk"]),
            "rtt_us": [statistics.median(r[0] for r in mine["rtt"]), statistics.median(r[1] for r in mine["rtt"])],
            "conn_per_s": await connection_rate(path, args.seconds),
            "reqresp": by_cpu[len(by_cpu) // 2],
            "runs": {
                "bulk_mb_s": mine["bulk"],
                "rtt_p50_us": [r[0] for r in mine["rtt"]],
                "vcpu_per_1000rps": [r["vcpu_per_1000rps"] for r in mine["reqresp"]],
            },
        }
    return out


def report(figures: dict, idle_rss: list[float], loaded: dict) -> None:
    print("ztunnel benchmark (2 nodes; direct = pod to pod without the mesh, mesh = through both ztunnels)")
    if figures:
        report_traffic(figures)
    print(f"  {'ztunnel RSS idle':<28} " + ", ".join(f"{r:.1f} MB" for r in idle_rss))
    print(
        f"  {'ztunnel RSS loaded':<28} "
        + ", ".join(f"{r:.1f} MB" for r in loaded["rss"])
        + f" ({loaded['pods']} pods served, {loaded['open']} connections open; with the pods only: "
        + ", ".join(f"{r:.1f} MB" for r in loaded["rss_pods_only"])
        + ")"
    )
    steady = ", ".join(f"{r:.1f} MB" for r in loaded["rss_steady"])
    print(f"  {'ztunnel RSS loaded, steady':<28} {steady} (the same, 12 s later)")
    print(json.dumps({"figures": figures, "idle_rss_mb": idle_rss, "loaded": loaded}, default=float))


def report_traffic(figures: dict) -> None:
    d, m = figures["direct"], figures["mesh"]
    print(row("bulk throughput", d["bulk_mb_s"], m["bulk_mb_s"], "MB/s"))
    print(row("1-byte RTT p50", d["rtt_us"][0], m["rtt_us"][0], "µs", better_high=False))
    print(row("1-byte RTT p99", d["rtt_us"][1], m["rtt_us"][1], "µs", better_high=False))
    print(row("new connections", d["conn_per_s"], m["conn_per_s"], "/s"))
    rr_d, rr_m = d["reqresp"], m["reqresp"]
    print(row("1 KB req-resp achieved", rr_d["rps"], rr_m["rps"], "rps"))
    print(row("1 KB req-resp p50", rr_d["p50"], rr_m["p50"], "µs", better_high=False))
    print(row("1 KB req-resp p99", rr_d["p99"], rr_m["p99"], "µs", better_high=False))
    print(f"  {'ztunnels CPU (both)':<28} {rr_m['vcpu_per_1000rps']:.3f} vCPU per 1000 rps (mesh path)")
    each = ", ".join(f"{u + s:.3f} ({u:.3f} user + {s:.3f} system)" for u, s in rr_m.get("per_ztunnel", []))
    print(f"  {'  each ztunnel':<28} {each}")
    runs = m["runs"]
    print(
        f"  {'median of':<28} {len(runs['bulk_mb_s'])} runs; mesh bulk "
        + "/".join(f"{v:.0f}" for v in runs["bulk_mb_s"])
        + " MB/s, RTT p50 "
        + "/".join(f"{v:.0f}" for v in runs["rtt_p50_us"])
        + " µs, vCPU "
        + "/".join(f"{v:.3f}" for v in runs["vcpu_per_1000rps"])
    )


async def run(state: Path, args: argparse.Namespace) -> None:
    with api(state) as client:
        paths = setup(client)
        pids = ztunnel_pids(state)
        await until_served(paths)
        figures = await measure(paths, args, pids) if not args.memory_only else {}
        if args.profile:  # one more paced run on the mesh path, both ztunnels recorded by py-spy and perf
            import loadgen

            spies = [loadgen.py_spy(pid, args.profile, f"ztunnel-node-{i + 1}") for i, pid in enumerate(pids)]
            spies += [loadgen.perf_record(pid, args.profile, f"ztunnel-node-{i + 1}") for i, pid in enumerate(pids)]
            await request_response(paths[1], args.rate, args.profile + 1, pids)
            for spy in spies:
                if spy is not None:
                    spy.wait(timeout=60)
        if figures:
            await asyncio.sleep(12)  # idle: after ztunnel's heap trim (every 10 s, mesh/heap.py) ran once
        idle_rss = [rss_mb(pid) for pid in pids]
        if args.pods:
            extra_pods(client, args.pods)
            deadline = time.monotonic() + 60
            while sum(served_pods(n) for n in NODE_IP) < args.pods + 2 and time.monotonic() < deadline:
                time.sleep(0.5)
        pods_rss = [rss_mb(pid) for pid in pids]
        if args.memory_report:
            before = {n: ztunnel_admin(n, "/debug/memory", timeout=60) for n in NODE_IP}
            Path(args.memory_report + ".pods").write_text(json.dumps(before, indent=1))
        writers = await hold_open(paths[1], args.open)
        await asyncio.sleep(2)
        loaded = {
            "rss": [rss_mb(pid) for pid in pids],
            "rss_pods_only": pods_rss,
            "pods": sum(served_pods(n) for n in NODE_IP),
            "open": len(writers),
        }
        if args.memory_report:
            reports = {n: ztunnel_admin(n, "/debug/memory", timeout=60) for n in NODE_IP}
            Path(args.memory_report).write_text(json.dumps(reports, indent=1))
        # Held longer: what a ztunnel carrying these connections settles at once its periodic
        # heap trim has run (what the opening handshakes freed goes back then).
        await asyncio.sleep(12)
        loaded["rss_steady"] = [rss_mb(pid) for pid in pids]
        for writer in writers:
            writer.close()
    report(figures, idle_rss, loaded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rtts", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=1000, help="1 KB request-response rate (requests/s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each figure; the median is reported")
    parser.add_argument("--pods", type=int, default=100, help="extra enrolled pods for the RSS figure")
    parser.add_argument("--open", type=int, default=1000, help="connections held open for the RSS figure")
    parser.add_argument("--memory-only", action="store_true", help="skip the traffic figures; only the RSS ones")
    parser.add_argument(
        "--profile", type=float, default=0, help="then record both ztunnels (py-spy, perf) this long, paced"
    )
    parser.add_argument(
        "--memory-report",
        help="write both ztunnels' /debug/memory, loaded, to this file (start the bench with "
        "PYTHONTRACEMALLOC=1 in the environment for allocation sites)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("ztunnel_bench: needs root (network namespaces)")
    if netns.exists("mesh-underlay"):
        sys.exit("ztunnel_bench: a cluster is already up on this machine (meshctl cluster down first)")
    state = Path(tempfile.mkdtemp(prefix="ztunnel-bench-"))
    try:
        meshctl("cluster", "up", "--nodes", "2", "--state-dir", str(state))
        uvloop.install()
        asyncio.run(run(state, args))
    finally:
        meshctl("cluster", "down", "--state-dir", str(state))


if __name__ == "__main__":
    main()
