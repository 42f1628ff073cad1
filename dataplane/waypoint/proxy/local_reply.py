"""Answers the waypoint makes itself, shaped as Envoy's sendLocalReply shapes them: text/plain
with the reason as the body, or, for a gRPC request, HTTP 200 trailers-only with `grpc-status`
mapped from the HTTP status (Envoy's httpToGrpcStatus: 403 → 7 PERMISSION_DENIED, 503 → 14
UNAVAILABLE, ...) and the reason as `grpc-message`."""

from __future__ import annotations

from collections.abc import Sequence

from ..l7.fault import http_to_grpc_status
from .messages import HttpResponse, text_response

# Envoy's local-reply bodies (router, upstream_request), which users' tooling greps for.
NO_HEALTHY_UPSTREAM = "no healthy upstream"
OVERFLOW = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
CONNECT_FAILURE = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
RESET = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
REFUSED = "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
TIMEOUT = "upstream request timeout"


def local_reply(
    grpc: bool,
    status: int,
    body: str,
    flags: str = "-",
    details: str = "",
    headers: Sequence[tuple[str, str]] = (),
    grpc_status: int | None = None,
) -> HttpResponse:
    """A local answer for an HTTP or a gRPC request (see the module docstring)."""
    if not grpc:
        response = text_response(status, body, flags=flags, details=details)
        response.headers.extend(headers)
        return response
    code = grpc_status if grpc_status is not None else http_to_grpc_status(status)
    out = [("content-type", "application/grpc"), ("grpc-status", str(code))]
    if body:
        out.append(("grpc-message", grpc_message(body)))
    out.extend(headers)
    return HttpResponse(200, out, b"", length=0, flags=flags, details=details)


def grpc_message(text: str) -> str:
    """gRPC over HTTP/2, "Responses": grpc-message is percent-encoded UTF-8, every byte outside
    printable ASCII (and `%` itself) escaped."""
    return "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in text.encode())
