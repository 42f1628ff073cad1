"""What an upstream attempt sends and gets back, and how it can fail (shared by the HTTP/1.1 and
HTTP/2 upstream codecs and the forwarding loop)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


class ConnectFailure(Exception):
    """No connection to the endpoint (refused, TLS or identity failure, timeout): flag UF."""


class UpstreamReset(Exception):
    """The connection or stream broke before a response arrived: flag UC. `refused` for an
    HTTP/2 REFUSED_STREAM (the upstream did not process the request)."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class Overflow(Exception):
    """A circuit breaker refused the attempt locally (max_pending_requests): flag UO."""


@dataclass(frozen=True)
class RequestHead:
    """What goes upstream besides the body: the (rewritten) path and authority, and the headers
    after JWT and the route's modifiers."""

    path: str
    authority: str
    headers: list[tuple[str, str]]


@dataclass
class UpstreamResponse:
    """Status and headers of an upstream answer; `body` streams the rest (consume or `discard`),
    or is the whole body as bytes when it had already arrived with the head (HTTP/1.1 with a
    content-length; the connection is then back in its pool); `trailers` are set once the body
    has been read to its end (HTTP/2 only)."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes] | bytes
    length: int | None
    trailers: list[tuple[str, str]] | None = None
    # The head ended the stream (a headers-only answer; for gRPC, "trailers-only" with
    # grpc-status in it): the downstream must end its stream with the head too.
    headers_only: bool = False


async def discard(body: AsyncIterator[bytes] | bytes) -> int:
    """Read and drop a response body (mirrors, retried attempts); its size."""
    if isinstance(body, bytes):
        return len(body)
    size = 0
    async for chunk in body:
        size += len(chunk)
    return size
