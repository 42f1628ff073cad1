"""Names: ztunnel's name server answering a pod on its node, against a bare UDP echo at the same
address in the same run.

A 2-node cluster (`meshctl cluster up`), a Service `web` in namespace `bench-dns` and a client pod
on node-1. From inside the pod's network namespace, `--workers` sockets each ask the next A
question for `web.bench-dns.svc.cluster.local` as soon as the last is answered, for `--seconds`,
to an echo (the same bytes sent back) that a process of its own serves on the pod's gateway, port
5353, in the node's namespace on uvloop as ztunnel (the floor of a UDP round trip from a pod to a
process on its node), then to ztunnel (the gateway, port 53), after a second of each to warm up.
Figures: queries/s, p50 / p99, and ztunnel's CPU per 1000 queries (/proc/PID/stat).

Run as root: .venv/bin/python bench/dns_bench.py [--seconds 4] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
import ztunnel_bench as zb

NS, NAME = "bench-dns", "web.bench-dns.svc.cluster.local"
GATEWAY = "198.18.1.1"  # node-1's pod gateway, where its ztunnel answers names
ECHO_PORT = 5353


def query(ident: int, name: str = NAME) -> bytes:
    """An A question, recursion desired."""
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", 1, 1)


def ask_loop(pod_ns: str, port: int, seconds: float, workers: int) -> dict:
    """Closed loop from inside `pod_ns`: queries/s, p50 / p99 µs, and answers that were no
    NOERROR with one record or more (0 for the echo, which sends the question back)."""
    latencies: list[float] = []
    bad = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(n: int) -> None:
        nonlocal bad
        sock = zb.netns.socket_in(pod_ns, socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(2)
        sock.connect((GATEWAY, port))
        mine, errors, i = [], 0, 0
        while time.perf_counter() < stop:
            i = (i + 1) & 0x0FFF
            ident = (n << 12) | i
            sent = time.perf_counter()
            sock.send(query(ident))
            answer = sock.recv(512)
            mine.append((time.perf_counter() - sent) * 1e6)
            if port == 53 and (answer[:2] != struct.pack("!H", ident) or answer[3] & 0x0F or answer[7] == 0):
                errors += 1
        sock.close()
        with lock:
            latencies.extend(mine)
            bad += errors

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - begin
    return {
        "qps": len(latencies) / elapsed,
        "p50": zb.percentile(latencies, 0.5),
        "p99": zb.percentile(latencies, 0.99),
        "bad": bad,
        "elapsed": elapsed,
    }


ECHO = """
import asyncio, uvloop
class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport): self.transport = transport
    def datagram_received(self, data, addr): self.transport.sendto(data, addr)
async def main():
    await asyncio.get_running_loop().create_datagram_endpoint(Echo, local_addr=("%s", %d))
    await asyncio.Event().wait()
uvloop.run(main())
"""


def echo_server() -> subprocess.Popen:
    """The baseline: the same bytes back, from a process of its own in node-1's namespace on the
    gateway's address, on the same event loop as ztunnel (uvloop): ztunnel's work minus the names."""
    command = ["ip", "netns", "exec", "mesh-node-1", sys.executable, "-c", ECHO % (GATEWAY, ECHO_PORT)]
    proc = subprocess.Popen(command)
    time.sleep(1.0)  # bound before the first question
    return proc


async def run(state: Path, args: argparse.Namespace) -> dict:
    with zb.api(state) as client:
        client.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }
        client.post(f"/api/v1/namespaces/{NS}/services", json=service).raise_for_status()
        client.post(f"/api/v1/namespaces/{NS}/pods", json=zb.pod("client", NS, "node-1", ["sleep", "86400"]))
        pod_ns = zb.pod_netns(zb.wait_running(client, NS, "client"))
    deadline = time.monotonic() + 30
    while ask_loop(pod_ns, 53, 0.2, 1)["bad"] and time.monotonic() < deadline:  # the Service reached ztunnel
        time.sleep(0.5)
    ztunnel = zb.ztunnel_pids(state)[0]
    echo_proc = echo_server()
    try:
        for port in (ECHO_PORT, 53):  # warm-up: the first second of any loop here runs slower
            ask_loop(pod_ns, port, 1.0, args.workers)
        echo = ask_loop(pod_ns, ECHO_PORT, args.seconds, args.workers)
        before = zb.cpu_seconds(ztunnel)
        names = ask_loop(pod_ns, 53, args.seconds, args.workers)
        names["vcpu_per_1000qps"] = (zb.cpu_seconds(ztunnel) - before) / names["elapsed"] / (names["qps"] / 1000)
    finally:
        echo_proc.terminate()
        echo_proc.wait(10)
    return {"names": names, "echo": echo, "workers": args.workers}


def report(figures: dict) -> None:
    names, echo = figures["names"], figures["echo"]
    print(f"names from a pod ({figures['workers']} sockets, closed loop; baseline = a UDP echo at the same address)")
    print(f"  {'':<22} {'queries/s':>10} {'p50 µs':>8} {'p99 µs':>8}")
    print(f"  {'UDP echo (baseline)':<22} {echo['qps']:>10.0f} {echo['p50']:>8.0f} {echo['p99']:>8.0f}")
    print(f"  {'ztunnel name server':<22} {names['qps']:>10.0f} {names['p50']:>8.0f} {names['p99']:>8.0f}")
    ratio, extra = names["qps"] / echo["qps"], names["p50"] - echo["p50"]
    print(f"  name server vs echo: {ratio:.2f}x queries/s, {extra:+.0f} µs p50")
    print(f"  ztunnel CPU: {names['vcpu_per_1000qps']:.3f} vCPU per 1000 queries/s; {names['bad']} bad answers")
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    loadgen.on_a_new_cluster("dns_bench", lambda state: run(state, args), report)


if __name__ == "__main__":
    main()
