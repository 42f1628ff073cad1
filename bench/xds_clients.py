"""Simulated ztunnels for the xDS benchmark: N delta streams in one process, each subscribing to
every Address and Authorization (wildcard) and acknowledging each response.

They are deliberately light, so a thousand of them fit beside mesh-xds on the benchmark machine:
responses arrive as bytes and are parsed by upb (C) without building a Python object per resource;
a stream keeps a count of the Addresses it was sent, not the resources themselves. What is
measured is mesh-xds, not a client's bookkeeping (the real client, mesh/xds/delta_client.py,
is exercised by the tests and by ztunnel).

Prints one JSON line when all streams have synced (each received at least --expect-addresses
Addresses and an Authorization response), then one line per stream each time the Authorization
`default/bench-policy` arrives in a new version (the time it arrived).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

ADDRESS = "type.googleapis.com/istio.workload.Address"
AUTHZ = "type.googleapis.com/istio.security.Authorization"
METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
WATCHED = "default/bench-policy"


class Stream:
    """One simulated ztunnel's delta stream."""

    def __init__(self, index: int, channel: grpc.aio.Channel, token: str) -> None:
        self.index = index
        self.token = token
        self.call = channel.stream_stream(
            METHOD,
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=lambda data: data,
        )
        self.requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest] = asyncio.Queue()
        self.addresses = 0  # Addresses received (each push counts again: enough to tell "synced")
        self.authorized = False  # an Authorization response arrived
        self.policy = ""  # the version of WATCHED held

    async def _outgoing(self) -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
        while True:
            yield await self.requests.get()

    async def run(self, on_policy: Callable[[Stream], None]) -> None:
        node = base_pb2.Node(id=f"ztunnel~bench-{self.index}")
        for type_url in (ADDRESS, AUTHZ):
            self.requests.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, node=node))
        call = self.call(self._outgoing(), metadata=[("authorization", f"Bearer {self.token}")])
        async for raw in call:
            response = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
            if response.type_url == ADDRESS:
                self.addresses += len(response.resources)
            else:
                self.authorized = True
                for resource in response.resources:
                    if resource.name == WATCHED and resource.version != self.policy:
                        self.policy = resource.version
                        on_policy(self)
                if WATCHED in response.removed_resources:
                    self.policy = ""
            ack = discovery_pb2.DeltaDiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce)
            self.requests.put_nowait(ack)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--roots", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--expect-addresses", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    roots = Path(args.roots).read_bytes()
    token = Path(args.token).read_text().strip()
    options = [("grpc.max_receive_message_length", 1 << 30)]
    channels = [
        grpc.aio.secure_channel(args.address, grpc.ssl_channel_credentials(roots), options=options)
        for _ in range(max(1, args.streams // 50))
    ]
    streams = [Stream(args.first_index + i, channels[i % len(channels)], token) for i in range(args.streams)]

    def arrived(stream: Stream) -> None:
        print(json.dumps({"client": stream.index, "policy": stream.policy, "at": time.time()}), flush=True)

    started = time.perf_counter()
    tasks = [asyncio.create_task(s.run(arrived)) for s in streams]
    deadline = started + args.seconds
    while not all(s.addresses >= args.expect_addresses and s.authorized for s in streams):
        if time.perf_counter() > deadline or any(t.done() for t in tasks):
            failed = next((t for t in tasks if t.done()), None)
            raise SystemExit(f"not synced: {failed.exception() if failed else 'timeout'}")
        await asyncio.sleep(0.2)
    print(json.dumps({"synced": True, "seconds": time.perf_counter() - started}), flush=True)
    await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
