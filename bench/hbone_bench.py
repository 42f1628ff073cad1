"""HBONE benchmark: the mesh path against the direct TCP path, on loopback, in the same run.

Processes (as in linux-dataplane-and-performance.md, "Paths"):
- app: an echo server and a sink server (the sink answers the byte count after the client's FIN);
- server proxy: HboneServer (mTLS, HTTP/2 CONNECT) splicing each stream to the app;
- client proxy: plain TCP listeners, each spliced into a pooled HBONE stream to the server proxy
  (what ztunnel's outbound does after REDIRECT);
- this process: the load generator, run against the app directly and through the client proxy.

Figures: bulk MB/s (256 KiB writes for a few seconds, then FIN and the sink's count), 1-byte
round trip p50/p99 (2000 echoes), new connections (= new HBONE streams on a pooled connection)
per second with 16 in flight; each printed with the direct figure and the ratio.

Run: .venv/bin/python bench/hbone_bench.py [--seconds 4] [--loop uvloop|asyncio]
Loopback only; every process it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mesh.certs.csr import make_csr
from mesh.hbone import (
    HboneClient,
    HboneServer,
    HboneStream,
    Pool,
    PoolKey,
    client_context,
    open_tcp,
    parse_authority,
    server_context,
    splice,
)
from mesh.identity import Identity
from mesh.memory_report import resident_kb
from services.ca.authority import SigningCA, cert_pem, issue, make_root
from services.ca.csr_checks import check_csr

HOST = "127.0.0.1"
CLIENT_ID = Identity("cluster.local", "default", "sleep")
SERVER_ID = Identity("cluster.local", "default", "web")
WRITE = 256 << 10


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def use_loop(name: str) -> None:
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# -- the processes under test -----------------------------------------------------------------


async def run_app() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 20):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while data := await reader.read(1 << 20):
            total += len(data)
        writer.write(total.to_bytes(8, "big"))
        await writer.drain()
        writer.close()

    echo_server = await asyncio.start_server(echo, HOST, 0)
    sink_server = await asyncio.start_server(sink, HOST, 0)
    ports = {"echo": echo_server.sockets[0].getsockname()[1], "sink": sink_server.sockets[0].getsockname()[1]}
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


async def run_server_proxy(certs: Path) -> None:
    context = server_context(
        (certs / "web.pem").read_text(), (certs / "web.key").read_bytes(), (certs / "root.pem").read_text()
    )

    async def handler(stream: HboneStream) -> None:
        host, port = parse_authority(stream.authority)
        try:
            upstream = await open_tcp(host, port)
        except OSError:
            stream.reject(503)
            return
        stream.accept()
        await splice(stream, upstream)

    server = HboneServer(context, handler, trust_domain="cluster.local")
    await server.listen(HOST, 0)
    print(json.dumps({"hbone": server.address[1]}), flush=True)
    await asyncio.Event().wait()


async def run_client_proxy(certs: Path, hbone_port: int, targets: dict[str, int]) -> None:
    context = client_context(
        (certs / "sleep.pem").read_text(), (certs / "sleep.key").read_bytes(), (certs / "root.pem").read_text()
    )
    key = PoolKey(str(CLIENT_ID), frozenset({str(SERVER_ID)}), (HOST, hbone_port))

    async def connect(key: PoolKey) -> HboneClient:
        return await HboneClient.connect(key.destination, context, expected_identities=key.destination_identities)

    pool = Pool(connect)
    ports = {}
    tasks: set[asyncio.Future[None]] = set()
    for name, target in targets.items():

        async def outbound(conn: socket.socket, target: int = target) -> None:
            stream = await pool.open(key, f"{HOST}:{target}", [("forwarded", f'for="{HOST}"')])
            await splice(stream, conn)

        async def accept(listener: socket.socket, outbound=outbound) -> None:  # type: ignore[no-untyped-def]
            loop = asyncio.get_running_loop()
            while True:
                conn, _ = await loop.sock_accept(listener)
                conn.setblocking(False)
                tasks.add(task := asyncio.ensure_future(outbound(conn)))
                task.add_done_callback(tasks.discard)

        listener = socket.create_server((HOST, 0))
        listener.setblocking(False)
        tasks.add(asyncio.ensure_future(accept(listener)))
        ports[name] = listener.getsockname()[1]
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


# -- the load ---------------------------------------------------------------------------------


async def bulk(port: int, seconds: float) -> float:
    reader, writer = await asyncio.open_connection(HOST, port)
    block = b"\x5a" * WRITE
    sent = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        writer.write(block)
        sent += WRITE
        await writer.drain()
    writer.write_eof()
    counted = int.from_bytes(await reader.readexactly(8), "big")
    elapsed = time.perf_counter() - started
    writer.close()
    assert counted == sent, (counted, sent)
    return sent / elapsed / 1e6


async def round_trips(port: int, count: int) -> tuple[float, float]:
    reader, writer = await asyncio.open_connection(HOST, port)
    times = []
    for _ in range(100):  # warm-up
        writer.write(b"x")
        await reader.readexactly(1)
    for _ in range(count):
        started = time.perf_counter()
        writer.write(b"x")
        await reader.readexactly(1)
        times.append(time.perf_counter() - started)
    writer.close()
    return pct(times, 0.5) * 1e6, pct(times, 0.99) * 1e6


async def connection_rate(port: int, seconds: float, concurrency: int = 16) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"x")
            await reader.readexactly(1)
            writer.close()
            await writer.wait_closed()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def measure(ports: dict[str, int], seconds: float) -> dict[str, float]:
    await round_trips(ports["echo"], 10)
    p50, p99 = await round_trips(ports["echo"], 2000)
    return {
        "bulk": await bulk(ports["sink"], seconds),
        "p50": p50,
        "p99": p99,
        "rate": await connection_rate(ports["echo"], seconds),
    }


async def hold_open(port: int, count: int, pids: list[int]) -> dict[str, list[float]]:
    """Each proxy's RSS before and with `count` tunnels open (one 1-byte round trip each)."""
    before = [rss_kb(pid) for pid in pids]
    held = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"x")
        await reader.readexactly(1)
        held.append(writer)
    await asyncio.sleep(0.5)
    loaded = [rss_kb(pid) for pid in pids]
    for writer in held:
        writer.close()
    return {"before_kb": before, "open_kb": loaded}


def rss_kb(pid: int) -> int:
    return resident_kb(pid)["VmRSS"]


# -- orchestration ----------------------------------------------------------------------------


def mint(certs: Path) -> None:
    now = datetime.now(UTC)
    root, key = make_root("cluster.local", now)
    ca = SigningCA(root, key)
    (certs / "root.pem").write_text(cert_pem(root))
    for name, identity in (("sleep", CLIENT_ID), ("web", SERVER_ID)):
        made = make_csr(identity)
        (certs / f"{name}.pem").write_text("".join(issue(ca, check_csr(made.csr_pem, "cluster.local"), 3600, now)))
        (certs / f"{name}.key").write_bytes(made.key_pem)


def spawn(args: list[str], procs: list[subprocess.Popen[str]]) -> dict[str, int]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    procs.append(proc)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        raise SystemExit(f"{args[:2]} did not start")
    return json.loads(line)


def report(
    direct: dict[str, float], mesh: dict[str, float], loop: str, held: dict[str, list[float]], count: int
) -> None:
    print(f"\nHBONE over loopback ({loop}; client proxy -> mTLS + HTTP/2 CONNECT -> server proxy -> app)")
    print(f"{'metric':<26}{'direct':>12}{'hbone':>12}{'ratio':>10}")
    rows = [
        ("bulk MB/s", "bulk", "{:.0f}"),
        ("1-byte RTT p50 us", "p50", "{:.0f}"),
        ("1-byte RTT p99 us", "p99", "{:.0f}"),
        ("new conns (streams)/s", "rate", "{:.0f}"),
    ]
    for label, key, fmt in rows:
        ratio = mesh[key] / direct[key] if direct[key] else 0.0
        print(f"{label:<26}{fmt.format(direct[key]):>12}{fmt.format(mesh[key]):>12}{ratio:>9.2f}x")
    print(f"added p50 latency: {mesh['p50'] - direct['p50']:.0f} us")
    if count:
        for i, name in enumerate(("client proxy", "server proxy")):
            before, loaded = held["before_kb"][i] / 1024, held["open_kb"][i] / 1024
            per = (loaded - before) * 1024 / count
            print(f"{name} RSS: {before:.1f} MB, {loaded:.1f} MB with {count} tunnels open ({per:.1f} KB each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--open", type=int, default=1000, help="tunnels held open for the proxies' RSS figure")
    parser.add_argument("--role", choices=["app", "server", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--certs", help=argparse.SUPPRESS)
    parser.add_argument("--hbone-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--targets", help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_loop(args.loop)
    if args.role == "app":
        asyncio.run(run_app())
    elif args.role == "server":
        asyncio.run(run_server_proxy(Path(args.certs)))
    elif args.role == "client":
        asyncio.run(run_client_proxy(Path(args.certs), args.hbone_port, json.loads(args.targets)))
    else:
        orchestrate(args.seconds, args.loop, args.open)


def orchestrate(seconds: float, loop: str, count: int) -> None:
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        os.chmod(certs, 0o700)
        mint(certs)
        try:
            common = ["--loop", loop, "--certs", str(certs)]
            app = spawn(["--role", "app", *common], procs)
            hbone = spawn(["--role", "server", *common], procs)["hbone"]
            via = spawn(["--role", "client", *common, "--hbone-port", str(hbone), "--targets", json.dumps(app)], procs)
            direct = asyncio.run(measure(app, seconds))
            mesh = asyncio.run(measure(via, seconds))
            pids = [procs[2].pid, procs[1].pid]
            held = asyncio.run(hold_open(via["echo"], count, pids)) if count else {}
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=10)
    report(direct, mesh, loop, held, count)


if __name__ == "__main__":
    main()
