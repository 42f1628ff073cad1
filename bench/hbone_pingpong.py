"""HBONE CPU per message: 1 KB ping-pong in one process, HBONE against plain TCP in the same run.

Both ends run in this process on one event loop over loopback, so the figure is the CPU the
process spends per round trip (user + system, from getrusage), with no scheduling between
processes in it: precise enough (about ±2 %) to compare two versions of the HBONE code, which
the cluster benchmark's noise hides. Baseline: the same ping-pong over a plain TCP connection
(asyncio streams). HBONE: one CONNECT stream over mutual TLS 1.3 (test certificates), echoed by
the server's stream handler. Relay: what both ztunnels do, in this one process (see `relay`).

Run: .venv/bin/python bench/hbone_pingpong.py [--messages 20000] [--loop uvloop|asyncio]
Loopback only; nothing outlives the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh.hbone import HboneClient, HboneServer, HboneStream
from mesh.hbone.splice import Tunnel, open_tcp, start_splice
from tests.unit.hbone.pki import Pki

HOST = "127.0.0.1"
MESSAGE = b"p" * 1024
WARMUP = 500


async def measure(round_trip: Callable[[], Awaitable[None]], count: int) -> dict[str, float]:
    """CPU and wall time per round trip over `count` round trips (after a warm-up)."""
    for _ in range(WARMUP):
        await round_trip()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(count):
        await round_trip()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {
        "cpu_us": (user + system) / count * 1e6,
        "user_us": user / count * 1e6,
        "system_us": system / count * 1e6,
        "wall_us": wall / count * 1e6,
    }


async def tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
    writer.close()


def tcp_round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Callable[[], Awaitable[None]]:
    async def round_trip() -> None:
        writer.write(MESSAGE)
        await reader.readexactly(len(MESSAGE))

    return round_trip


async def plain_tcp(count: int) -> dict[str, float]:
    server = await asyncio.start_server(tcp_echo, HOST, 0)
    reader, writer = await asyncio.open_connection(HOST, server.sockets[0].getsockname()[1])
    try:
        return await measure(tcp_round_trip(reader, writer), count)
    finally:
        writer.close()
        server.close()


async def hbone(count: int) -> dict[str, float]:
    pki = Pki()

    async def echo(stream: HboneStream) -> None:
        stream.accept()
        while data := await stream.read():
            await stream.write(data)
        stream.close_write()

    server = HboneServer(pki.server("web"), echo, trust_domain="cluster.local")
    await server.listen(HOST, 0)
    client = await HboneClient.connect(
        server.address, pki.client("sleep"), expected_identities={"spiffe://cluster.local/ns/default/sa/web"}
    )
    stream = await client.open(f"{HOST}:9")

    async def round_trip() -> None:
        await stream.write(MESSAGE)
        got = 0
        while got < len(MESSAGE):
            got += len(await stream.read())

    try:
        return await measure(round_trip, count)
    finally:
        client.close()
        await server.close(grace=1.0)


async def relay(count: int) -> dict[str, float]:
    """Both ztunnels' work in one process: a plain TCP client, accepted and spliced into an HBONE
    stream (node-1's outbound), the stream accepted and spliced into a TCP connection to the echo
    (node-2's inbound). Against plain TCP, the difference is what two ztunnels cost per round
    trip with no scheduling or cache misses in it."""
    pki = Pki()
    loop = asyncio.get_running_loop()

    echo_server = await asyncio.start_server(tcp_echo, HOST, 0)
    echo_port = echo_server.sockets[0].getsockname()[1]
    tunnels: list[Tunnel] = []

    async def inbound(stream: HboneStream) -> None:
        upstream = await open_tcp(HOST, echo_port)
        stream.accept()
        tunnel = await start_splice(stream, upstream)
        tunnels.append(tunnel)
        await tunnel.finished

    server = HboneServer(pki.server("web"), inbound, trust_domain="cluster.local")
    await server.listen(HOST, 0)
    client = await HboneClient.connect(
        server.address, pki.client("sleep"), expected_identities={"spiffe://cluster.local/ns/default/sa/web"}
    )
    listener = socket.create_server((HOST, 0))
    listener.setblocking(False)
    dial = asyncio.ensure_future(asyncio.open_connection(HOST, listener.getsockname()[1]))
    accepted, _ = await loop.sock_accept(listener)
    tunnels.append(await start_splice(await client.open(f"{HOST}:{echo_port}"), accepted))
    reader, writer = await dial
    try:
        return await measure(tcp_round_trip(reader, writer), count)
    finally:
        writer.close()  # the FIN crosses both tunnels; the echo closes and they finish
        await asyncio.wait([tunnel.finished for tunnel in tunnels], timeout=5)
        for tunnel in tunnels:
            tunnel.cut(ConnectionAbortedError("benchmark over"))
        listener.close()
        client.close()
        await server.close(grace=1.0)
        echo_server.close()


async def run(count: int) -> dict[str, dict[str, float]]:
    return {"tcp": await plain_tcp(count), "hbone": await hbone(count), "relay": await relay(count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        uvloop.install()
    figures = asyncio.run(run(args.messages))
    tcp, mesh, both = figures["tcp"], figures["hbone"], figures["relay"]
    print(f"1 KB ping-pong, {args.messages} round trips, one process ({args.loop})")
    for name, f in (("plain TCP", tcp), ("HBONE", mesh), ("relay", both)):
        print(
            f"  {name:<10} {f['cpu_us']:6.1f} µs CPU per round trip "
            f"({f['user_us']:.1f} user + {f['system_us']:.1f} system), wall {f['wall_us']:.1f} µs"
        )
    print(f"  HBONE costs {mesh['cpu_us'] / tcp['cpu_us']:.2f}x plain TCP's CPU per round trip")
    print(
        f"  relay (TCP -> splice -> HBONE -> splice -> TCP, both ztunnels' work): "
        f"+{both['cpu_us'] - tcp['cpu_us']:.1f} µs CPU per round trip over plain TCP"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
