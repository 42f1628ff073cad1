"""The machine's floor for a proxy hop: what waking a sleeping process costs here.

Every hop through a proxy process adds a wake-up: the proxy sleeps in epoll until a packet
arrives, and the process it writes to sleeps until the proxy's write. Two ztunnels add four to
every round trip. This measures one 1-byte ping-pong between two processes over a socketpair,
both on one CPU and on two (pinned), as wall time per round trip and CPU per process per round
trip. On a VM, the cross-CPU case includes the inter-processor interrupt and the idle vCPU's
wake-up, which are paid in both wall time and the processes' CPU time: that part of the cluster
benchmark's figures belongs to the machine, not to the proxy's code.

Run: python bench/wakeup_floor.py [--round-trips 20000]  (needs two CPUs; no network)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import time


def ping_pong(cpu_a: int, cpu_b: int, count: int) -> dict[str, float]:
    """`count` round trips between this process (on `cpu_a`) and a child (on `cpu_b`)."""
    ours, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:  # the echo: it exits after the warm-up and the measured round trips
        ours.close()
        os.sched_setaffinity(0, {cpu_b})
        for _ in range(count + 100):
            theirs.recv(1)
            theirs.send(b"x")
        os._exit(0)
    theirs.close()
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu_a})
    try:
        for _ in range(100):
            ours.send(b"x")
            ours.recv(1)
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(count):
            ours.send(b"x")
            ours.recv(1)
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.sched_setaffinity(0, allowed)
        ours.close()
        _, _, usage = os.wait4(child, 0)
    mine = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {
        "wall_us": wall / count * 1e6,
        "cpu_us_this": mine / count * 1e6,
        "cpu_us_echo": (usage.ru_utime + usage.ru_stime) / (count + 100) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=20000)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("wakeup_floor: needs two CPUs")
    same = ping_pong(cpus[0], cpus[0], args.round_trips)
    cross = ping_pong(cpus[0], cpus[1], args.round_trips)
    print(f"1-byte ping-pong between two processes, {args.round_trips} round trips (2 wake-ups each)")
    for name, f in (("same CPU", same), ("two CPUs", cross)):
        print(
            f"  {name:<9} wall {f['wall_us']:5.1f} µs per round trip; CPU per round trip "
            f"{f['cpu_us_this']:.1f} µs (this process), {f['cpu_us_echo']:.1f} µs (echo)"
        )
    extra_cpu = (cross["cpu_us_this"] + cross["cpu_us_echo"] - same["cpu_us_this"] - same["cpu_us_echo"]) / 2
    extra_wall = (cross["wall_us"] - same["wall_us"]) / 2
    print(f"  a wake-up across CPUs costs +{extra_wall:.1f} µs of latency and +{extra_cpu:.1f} µs of CPU")
    print(json.dumps({"same_cpu": same, "two_cpus": cross}))


if __name__ == "__main__":
    main()
