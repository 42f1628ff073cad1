"""Simulated ztunnels for the xDS benchmark: N delta streams in one process.

Prints one JSON line when all streams have synced, then one line per received Authorization
change named by --watch-policy (the time it arrived), then totals on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mesh.xds.delta_client import DeltaClient

ADDRESS = "type.googleapis.com/istio.workload.Address"
AUTHZ = "type.googleapis.com/istio.security.Authorization"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--roots", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--expect-addresses", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    roots = Path(args.roots).read_bytes()
    token = Path(args.token).read_text().strip()
    channels = [
        grpc.aio.secure_channel(
            args.address, grpc.ssl_channel_credentials(roots), options=[("grpc.max_receive_message_length", 256 << 20)]
        )
        for _ in range(max(1, args.streams // 50))
    ]
    clients = []
    started = time.perf_counter()
    for i in range(args.streams):
        client = DeltaClient(channels[i % len(channels)], f"ztunnel~bench-{i}", token=token)
        client.watch(ADDRESS)
        client.watch(AUTHZ)
        clients.append(client)
    tasks = [asyncio.create_task(c.run()) for c in clients]
    for c in clients:
        await c.wait_for(
            lambda c=c: len(c.types[ADDRESS].resources) >= args.expect_addresses and c.types[AUTHZ].acked > 0,
            args.seconds,
        )
    print(json.dumps({"synced": True, "seconds": time.perf_counter() - started}), flush=True)
    seen: dict[int, str] = {}

    async def watch(i: int, client: DeltaClient) -> None:
        while True:
            state = client.types[AUTHZ]
            version = state.resources.get("default/bench-policy")
            current = version.version if version else ""
            if seen.get(i) != current:
                seen[i] = current
                print(json.dumps({"client": i, "policy": current, "at": time.time()}), flush=True)
            async with client.updated:
                await client.updated.wait()

    watchers = [asyncio.create_task(watch(i, c)) for i, c in enumerate(clients)]
    await asyncio.sleep(args.seconds)
    for t in tasks + watchers:
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
