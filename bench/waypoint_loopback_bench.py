"""Waypoint on loopback: CPU per request and latency of one real `waypoint` process, without a
cluster (no root, no network namespaces).

The waypoint runs as in tests/integration/waypoint_process.py: istiod (SQLite, its own
redis-server) and mesh-ca for its pod's token and certificate, the test ADS server serving
hand-built Envoy resources (one filter chain `VIP:80` with the fault and router filters, as
mesh-xds writes them, one route `/` to a cluster with one HBONE endpoint), and an HBONE backend
(echo's certificate) answering every request with 1 KB. The load generator speaks as ztunnel
would: HBONE CONNECT streams to the waypoint with sleep's client certificate (`forwarded` and
`baggage` headers), then `POST /bytes/1024` with a 1 KB body on keep-alive HTTP/1.1.

Two paths, in the same run: `direct` (the same requests straight to the HBONE backend) and
`waypoint` (client → waypoint → backend). For each: a closed loop over `--conns` streams for
`--seconds`, then paced runs at each `--rates` over 4 streams. Reported per run: requests/s,
p50/p99, and, for the waypoint, its process's CPU seconds (user + system, /proc/PID/stat) per
1000 requests. The load generator and the backend share this process's event loop (uvloop).

.venv/bin/python bench/waypoint_loopback_bench.py [--seconds 4] [--rates 500,1000] [--conns 4]
    [--profile SECONDS]  (py-spy, when installed, records the waypoint under the closed loop)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from envoy.config.listener.v3 import listener_pb2  # noqa: E402
from envoy.config.route.v3 import route_components_pb2 as rc_pb2  # noqa: E402
from envoy.config.route.v3 import route_pb2  # noqa: E402
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: E402

from dataplane.waypoint.proxy.byte_stream import HboneBytes  # noqa: E402
from dataplane.waypoint.proxy.messages import HttpRequest, HttpResponse  # noqa: E402
from mesh.certs.ca_client import CaClient  # noqa: E402
from mesh.certs.manager import CertificateManager  # noqa: E402
from mesh.clock import SystemClock  # noqa: E402
from mesh.hbone import HboneClient, baggage_header, client_context, forwarded_header  # noqa: E402
from tests import harness  # noqa: E402
from tests.integration import waypoint_env as env  # noqa: E402
from tests.integration import waypoint_process as wp  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import loadgen  # noqa: E402  (py-spy)

CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = b"q" * 1024
ANSWER = b"a" * 1024
VIP, HOST = "10.96.0.50", "server.bench.svc.cluster.local"
CLUSTER = f"inbound-vip|{env.PORT}|http|{HOST}"
REQUEST = f"POST /bytes/1024 HTTP/1.1\r\nHost: {HOST}:{env.PORT}\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY
CONNECT_HEADERS = (
    ("forwarded", forwarded_header("10.244.1.5", 40000, f"{VIP}:{env.PORT}")),
    (
        "baggage",
        baggage_header(
            {
                "k8s.cluster.name": "Kubernetes",
                "k8s.namespace.name": "default",
                "k8s.deployment.name": "sleep",
                "service.name": "sleep",
                "service.version": "v1",
            }
        ),
    ),
)


def resources() -> dict[str, dict[str, object]]:
    """One chain (`VIP:80`: fault, router), one route `/`, one cluster with the OK backend."""
    vhost = rc_pb2.VirtualHost(name=HOST, domains=["*"])
    env._route(vhost, "/", CLUSTER)
    routes = route_pb2.RouteConfiguration(name=f"inbound-vip|{env.PORT}|http|{HOST}", virtual_hosts=[vhost])
    listener = listener_pb2.Listener(name="waypoint/default/wp")
    listener.filter_chains.append(env._chain(VIP, HOST, [("envoy.filters.http.fault", fault_pb2.HTTPFault())]))
    cluster, assignment = env._cluster(CLUSTER, (env.OK,))
    return {
        "type.googleapis.com/envoy.config.listener.v3.Listener": {listener.name: listener},
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": {routes.name: routes},
        "type.googleapis.com/envoy.config.cluster.v3.Cluster": {CLUSTER: cluster},
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": {CLUSTER: assignment},
    }


class KilobyteBackends(env.Backends):
    """Every backend address answers 1 KB."""

    async def _answer(self, ip: str, request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, [("content-type", "application/octet-stream")], ANSWER)


# --- the load ------------------------------------------------------------------------------------


class Http1:
    """A minimal keep-alive HTTP/1.1 client over a tunnel (cheap, so the client is not the limit)."""

    def __init__(self, tunnel: HboneBytes) -> None:
        self.tunnel = tunnel
        self.buffer = b""

    async def _fill(self) -> None:
        chunk = await self.tunnel.read()
        if not chunk:
            raise ConnectionError("closed")
        self.buffer += chunk

    async def exchange(self) -> int:
        await self.tunnel.write(REQUEST)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            await self._fill()
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            await self._fill()
        self.buffer = self.buffer[length:]
        return status


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Path_:
    """One way to the backend: a pooled HBONE connection and an authority."""

    def __init__(self, name: str, client: HboneClient, authority: str, pid: int | None) -> None:
        self.name, self.client, self.authority, self.pid = name, client, authority, pid

    async def streams(self, n: int) -> list[Http1]:
        return [Http1(HboneBytes(await self.client.open(self.authority, CONNECT_HEADERS))) for _ in range(n)]


def _figures(latencies: list[float], errors: int, elapsed: float, cpu: float | None) -> dict:
    n = len(latencies)
    return {
        "requests": n,
        "rps": n / elapsed,
        "p50_us": percentile(latencies, 0.5),
        "p99_us": percentile(latencies, 0.99),
        "errors": errors,
        "cpu_s_per_1000_requests": cpu * 1000 / n if cpu is not None and n else None,
    }


async def _measure(path: Path_, clients: list[Http1], drive) -> dict:
    latencies: list[float] = []
    errors = 0

    async def one(client: Http1) -> None:
        nonlocal errors
        sent = time.perf_counter()
        if await client.exchange() != 200:
            errors += 1
        latencies.append((time.perf_counter() - sent) * 1e6)

    cpu_before = cpu_seconds(path.pid) if path.pid else 0.0
    begin = time.perf_counter()
    await asyncio.gather(*(drive(i, c, one, begin) for i, c in enumerate(clients)))
    elapsed = time.perf_counter() - begin
    cpu = cpu_seconds(path.pid) - cpu_before if path.pid else None
    for client in clients:
        client.tunnel.close()
    return _figures(latencies, errors, elapsed, cpu)


async def closed_loop(path: Path_, conns: int, seconds: float) -> dict:
    clients = await path.streams(conns)

    async def drive(_i: int, client: Http1, one, begin: float) -> None:
        while time.perf_counter() < begin + seconds:
            await one(client)

    return await _measure(path, clients, drive)


async def paced(path: Path_, rate: float, seconds: float, conns: int = 4) -> dict:
    clients = await path.streams(conns)
    interval = conns / rate

    async def drive(i: int, client: Http1, one, begin: float) -> None:
        n = 0
        while (due := begin + i * interval / conns + n * interval) < begin + seconds:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await one(client)
            n += 1

    return await _measure(path, clients, drive)


# --- setup -----------------------------------------------------------------------------------------


async def _sleep_context(ca: harness.MeshCa, node_token: str):
    certs = CertificateManager(lambda: CaClient(ca.address, ca.roots_pem, node_token), SystemClock(), "cluster.local")
    async with certs:
        sleep = await certs.get(env.SLEEP)
    return client_context("".join(sleep.chain), sleep.key_pem, ca.roots_pem)


@contextlib.contextmanager
def running(tmp: Path) -> Iterator[tuple[wp.Loop, dict, object]]:
    """The waypoint (waypoint_process's steps, on this file's resources and backends), the test's
    parts, and sleep's client TLS context."""
    loop = wp.Loop()
    parts: dict = {}
    try:
        with (
            harness.redis_server(tmp) as redis,
            harness.running_istiod(tmp, "sqlite", redis.url) as istiod,
            harness.running_ca(istiod) as ca,
        ):
            node_token = harness.create_node(istiod, "node-1")
            how = {"resources": resources(), "backends": KilobyteBackends, "env": {}}
            try:
                loop.run(wp._start(parts, istiod, ca, node_token, tmp, **how), timeout=60)
                yield loop, parts, loop.run(_sleep_context(ca, node_token))
            finally:
                loop.run(wp._stop(parts))
    finally:
        loop.close()


async def run(parts: dict, sleep_ctx, args: argparse.Namespace) -> dict:
    pid = parts["proc"].pid
    backend = await HboneClient.connect(
        (env.OK, parts["ports"]["backend"]), sleep_ctx, expected_identities={str(env.ECHO)}
    )
    paths = [
        Path_("direct", backend, f"{env.OK}:8080", None),
        Path_("waypoint", parts["client"], f"{VIP}:{env.PORT}", pid),
    ]
    for path in paths:  # warm up: connections, pools, first-request imports
        await closed_loop(path, 2, 1.0)
    figures: dict = {}
    for path in paths:
        spy = loadgen.py_spy(pid, args.profile, "waypoint-loopback") if args.profile and path.pid else None
        seconds = max(args.seconds, args.profile) if spy else args.seconds
        figures[path.name] = {"closed": await closed_loop(path, args.conns, seconds)}
        if spy is not None:
            await asyncio.to_thread(spy.wait, 60)
        for rate in args.rates:
            figures[path.name][f"paced_{rate:.0f}"] = await paced(path, rate, args.seconds)
    backend.close()
    return figures


def report(figures: dict, args: argparse.Namespace) -> None:
    print(
        f"waypoint loopback benchmark (POST 1 KB → 1 KB, HTTP/1.1 keep-alive over HBONE;"
        f" closed loop on {args.conns} streams, paced over 4; {args.seconds:.0f} s each)"
    )
    print(f"  {'path':<9} {'run':<11} {'rps':>7} {'p50 µs':>8} {'p99 µs':>8} {'CPU s/1000 req':>15}")
    for name in ("direct", "waypoint"):
        for run_name, f in figures[name].items():
            cpu = f["cpu_s_per_1000_requests"]
            cpu_text = f"{cpu:.3f}" if cpu is not None else "—"
            print(
                f"  {name:<9} {run_name:<11} {f['rps']:>7.0f} {f['p50_us']:>8.0f} {f['p99_us']:>8.0f} {cpu_text:>15}"
                + (f"  errors {f['errors']}" if f["errors"] else "")
            )
    for run_name in figures["waypoint"]:
        d, w = figures["direct"][run_name], figures["waypoint"][run_name]
        print(f"  waypoint over direct, {run_name}: +{w['p50_us'] - d['p50_us']:.0f} µs p50")
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rates", default="500,1000", help="paced request rates (requests/s), comma-separated")
    parser.add_argument("--conns", type=int, default=4, help="streams of the closed loop")
    parser.add_argument("--profile", type=float, default=0, help="py-spy the waypoint for this many seconds")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",") if r]
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # wp.Loop's new_event_loop follows the policy
    tmp = Path(tempfile.mkdtemp(prefix="waypoint-loopback-"))
    try:
        with running(tmp) as (loop, parts, sleep_ctx):
            timeout = 120 + (args.seconds + 1) * (1 + len(args.rates)) * 2 + args.profile
            figures = loop.run(run(parts, sleep_ctx, args), timeout=timeout)
        report(figures, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
