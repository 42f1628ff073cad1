"""A tiny gRPC server and client for the e2e tests, run inside pods with the project's Python.

    grpc_app.py serve PORT NAME     # service mesh.Echo: Say answers "NAME:<request>", Fail answers NOT_FOUND
    grpc_app.py call HOST:PORT METHOD TEXT [COUNT]   # prints one line per call: OK <answer> | <STATUS CODE>

No .proto: generic handlers over raw bytes are enough to carry real gRPC (HTTP/2, trailers).
"""

from __future__ import annotations

import sys
from concurrent import futures

import grpc


def serve(port: int, name: str) -> None:
    def say(request: bytes, context: grpc.ServicerContext) -> bytes:
        return f"{name}:".encode() + request

    def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "nothing here")
        return b""

    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("mesh.Echo", handlers),))
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    server.wait_for_termination()


def call(target: str, method: str, text: str, count: int) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(f"/mesh.Echo/{method}")
        for _ in range(count):
            try:
                print("OK", stub(text.encode(), timeout=5).decode(), flush=True)
            except grpc.RpcError as e:
                print(e.code().name, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        call(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 1)
