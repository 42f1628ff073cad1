"""A stock gRPC client (grpcio's own xDS support) driven by JSON lines on stdin.

Run by test_xds_grpc.py in a subprocess, because GRPC_XDS_BOOTSTRAP is read once per process.
Usage: `python grpc_xds_client.py xds:///greeter.default.svc.cluster.local`. Commands, one JSON
object per line; each answer is one JSON line:

- `{"op": "calls", "n": 1000, "metadata": {"x-tier": "gold"}}`: n sequential unary calls;
  answers `{"backends": {name: count}, "errors": {code: count}}`.
- `{"op": "loop", "seconds": 4}`: calls until the time is up; the answer adds `sequence`, each
  call's backend or `ERR:<code>` in order.

It first waits (up to 30 s) for one call to succeed and prints `{"ready": true}`.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

import grpc

METHOD = "/mesh.test.Echo/Who"


def call(stub, metadata: list[tuple[str, str]]) -> str:
    try:
        return stub(b"", metadata=metadata, timeout=5).decode()
    except grpc.RpcError as e:
        return f"ERR:{e.code().name}"


def summary(outcomes: list[str]) -> dict:
    backends = Counter(o for o in outcomes if not o.startswith("ERR:"))
    errors = Counter(o[4:] for o in outcomes if o.startswith("ERR:"))
    return {"backends": dict(backends), "errors": dict(errors)}


def wait_ready(stub) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            stub(b"", timeout=5, wait_for_ready=True)
            return
        except grpc.RpcError:
            # A wait_for_ready call started before the first good config may never be released
            # (reference grpc-proxyless-xds, "Timers and waiting"): retry with a fresh call.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.enable_http_proxy", 0)])
    stub = channel.unary_unary(METHOD)
    wait_ready(stub)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        metadata = list((command.get("metadata") or {}).items())
        if command["op"] == "calls":
            outcomes = [call(stub, metadata) for _ in range(command["n"])]
            print(json.dumps(summary(outcomes)), flush=True)
        elif command["op"] == "loop":
            end = time.monotonic() + command["seconds"]
            outcomes = []
            while time.monotonic() < end:
                outcomes.append(call(stub, metadata))
            print(json.dumps({**summary(outcomes), "sequence": outcomes}), flush=True)


if __name__ == "__main__":
    main()
