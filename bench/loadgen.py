"""Load on keep-alive HTTP/1.1 connections, and the run on a fresh local cluster, for the cluster
benchmarks (ingress_bench.py, waypoint_bench.py, soak_bench.py).

A path is given as an `Opener` (a new connection to it) and the request's bytes; the figures are
microsecond latencies and their p50 / p99 (ztunnel_bench.percentile), and for the paced load the
vCPU a process spent per 1000 rps (from /proc/PID/stat).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ztunnel_bench as zb  # shared cluster and measurement helpers

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[], Awaitable[Stream]]


async def one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request and read its whole answer (Content-Length framed); the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def closed_loop(open_: Opener, request: bytes, conns: int, seconds: float) -> dict:
    """`conns` connections each sending the next request when the last is answered, for `seconds`:
    rps, p50 / p99 (µs), and how many answers were not 200."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await open_()
        while time.perf_counter() < stop:
            sent = time.perf_counter()
            if await one_request(reader, writer, request) != 200:
                errors += 1
            latencies.append((time.perf_counter() - sent) * 1e6)
        writer.close()

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    elapsed = time.perf_counter() - begin
    return {
        "rps": len(latencies) / elapsed,
        "p50": zb.percentile(latencies, 0.5),
        "p99": zb.percentile(latencies, 0.99),
        "errors": errors,
    }


async def paced(open_: Opener, request: bytes, rate: float, seconds: float, pid: int | None, conns: int = 4) -> dict:
    """`rate` requests per second spread over `conns` connections for `seconds` (each sent when due,
    so latency is not hidden by a slower send rate): rps, p50 / p99 (µs), and process `pid`'s vCPU
    per 1000 rps when given."""
    streams = [await open_() for _ in range(conns)]
    latencies: list[float] = []
    interval = conns / rate

    async def drive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, offset: float) -> None:
        n = 0
        while (due := begin + offset + n * interval) < begin + seconds:
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            await one_request(reader, writer, request)
            latencies.append((time.perf_counter() - sent) * 1e6)
            n += 1

    user_before, system_before = zb.cpu_split(pid) if pid else (0.0, 0.0)
    begin = time.perf_counter()
    await asyncio.gather(*(drive(r, w, i * interval / conns) for i, (r, w) in enumerate(streams)))
    elapsed = time.perf_counter() - begin
    user, system = zb.cpu_split(pid) if pid else (0.0, 0.0)
    user, system = user - user_before, system - system_before
    cpu = user + system
    for _, writer in streams:
        writer.close()
    achieved = len(latencies) / elapsed
    return {
        "rps": achieved,
        "p50": zb.percentile(latencies, 0.5),
        "p99": zb.percentile(latencies, 0.99),
        "vcpu_per_1000rps": (cpu / elapsed) / (achieved / 1000) if pid and achieved else None,
        "system_share": system / cpu if cpu else None,  # of that CPU, the kernel's part
    }


async def until_answers(
    open_: Opener, request: bytes, what: str, errors: tuple[type[BaseException], ...], timeout: float = 60
) -> None:
    """Retry a request every 0.3 s until it is answered 200 (`errors` count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reader, writer = await open_()
            status = await asyncio.wait_for(one_request(reader, writer, request), 5)
            writer.close()
            if status == 200:
                return
        except errors:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} does not answer")
        await asyncio.sleep(0.3)


def py_spy(pid: int, seconds: float, name: str) -> subprocess.Popen | None:
    """Record process `pid` with py-spy (when installed) for `seconds` into /tmp/{name}-{time}.txt
    (raw collapsed stacks, 200 samples/s); None without py-spy."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not installed: no profile", file=sys.stderr)
        return None
    out = f"/tmp/{name}-{int(time.time())}.txt"
    print(f"profiling process {pid} into {out}", file=sys.stderr)
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200", "-f", "raw", "-o", out]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_record(pid: int, seconds: float, name: str) -> subprocess.Popen | None:
    """Record process `pid` with Linux perf (when installed) for `seconds` into
    /tmp/{name}-{time}.perf.data, call graphs included: where py-spy sees Python frames, perf
    splits the time between the kernel, libcrypto, the event loop and the interpreter.
    `perf report -i FILE --sort dso` reads it. None without perf."""
    perf = shutil.which("perf")
    if perf is None:
        print("perf not installed: no native profile", file=sys.stderr)
        return None
    out = f"/tmp/{name}-{int(time.time())}.perf.data"
    print(f"perf recording process {pid} into {out}", file=sys.stderr)
    cmd = [perf, "record", "-F", "999", "-g", "-p", str(pid), "-o", out, "--", "sleep", str(seconds)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def on_a_new_cluster(
    script: str, run: Callable[[Path], Coroutine[Any, Any, Any]], report: Callable[[Any], None]
) -> None:
    """As root with no cluster up: a 2-node cluster (`meshctl cluster up`) in a new state directory,
    `report(run(state))` on uvloop, and the cluster taken down whatever happens."""
    if os.geteuid() != 0:
        sys.exit(f"{script}: needs root (network namespaces)")
    if zb.netns.exists("mesh-underlay"):
        sys.exit(f"{script}: a cluster is already up on this machine (meshctl cluster down first)")
    state = Path(tempfile.mkdtemp(prefix=script.replace("_", "-") + "-"))
    try:
        zb.meshctl("cluster", "up", "--nodes", "2", "--state-dir", str(state))
        uvloop.install()
        report(asyncio.run(run(state)))
    finally:
        zb.meshctl("cluster", "down", "--state-dir", str(state))
