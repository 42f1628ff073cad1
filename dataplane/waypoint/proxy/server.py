"""15008: each CONNECT's `:authority` (`VIP:port`, or a bound pod's `IP:port`) picks a filter chain
(none: 503 at CONNECT), the peer's identity comes from its verified certificate, and the tunnelled
bytes are served as HTTP/2 (the client preface, or the chain's codec) or HTTP/1.1 (`serve_http`,
which the ingress listeners use too)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from mesh.hbone import HboneStream
from mesh.hbone.headers import AuthorityError, parse_authority

from ..config import ConfigStore
from ..original_dst import at
from ..telemetry import parse_baggage, source_from
from .byte_stream import ByteStream, HboneBytes, StreamClosed
from .downstream_h1 import serve_h1
from .downstream_h2 import PREFACE, H2Server
from .messages import HttpRequest, HttpResponse
from .pipeline import Downstream, Pipeline

log = logging.getLogger("waypoint.inbound")


async def sniff(stream: ByteStream) -> bytes:
    """The first bytes, enough to tell the HTTP/2 preface from an HTTP/1.1 request line."""
    data = b""
    while len(data) < len(PREFACE) and PREFACE.startswith(data):
        chunk = await stream.read()
        if not chunk:
            break
        data += chunk
    return data


async def serve_http(
    stream: ByteStream, codec: str, handle_request: Callable[[HttpRequest], Awaitable[HttpResponse]]
) -> None:
    """Serve one downstream connection's requests: HTTP/2 when the client preface or `codec`
    (`http2`: the chain's codec, or ALPN `h2`) says so, else HTTP/1.1."""
    first = await sniff(stream)
    if not first:
        return
    if first.startswith(PREFACE) or codec == "http2":
        await H2Server(stream, handle_request).run(first)
    else:
        await serve_h1(stream, first, handle_request)


class Inbound:
    """The HBONE server's handler (HboneServer calls `handle` for each CONNECT)."""

    def __init__(self, store: ConfigStore, pipeline: Pipeline) -> None:
        self._store = store
        self._pipeline = pipeline
        self.active = 0

    async def handle(self, stream: HboneStream) -> None:
        try:
            vip, port = parse_authority(stream.authority)
        except AuthorityError:
            stream.reject(400)
            return
        chain = self._store.chain_for(vip, port)
        if chain is None:
            log.info("no filter chain", extra={"authority": stream.authority, "peer": stream.peer_identity})
            stream.reject(503)
            return
        headers = dict(stream.request_headers)
        peer = stream.peer_address
        down = Downstream(
            chain=chain,
            vip=vip,
            port=port,
            source=source_from(stream.peer_identity, parse_baggage(headers.get("baggage"))),
            source_ip=_forwarded_for(headers.get("forwarded")) or (peer[0] if peer else ""),
            destination=at(chain.destination, vip, port) if chain.destination is not None else None,
        )
        stream.accept()
        self.active += 1
        tunnel = HboneBytes(stream)

        async def handle_request(request: HttpRequest) -> HttpResponse:
            return await self._pipeline.handle(down, request)

        try:
            await serve_http(tunnel, chain.codec, handle_request)
        except StreamClosed as e:
            log.debug("stream ended: %s", e)
        finally:
            self.active -= 1
            tunnel.close()


def _forwarded_for(value: str | None) -> str | None:
    """The client IP from ztunnel's `forwarded: for="ip:port"` (RFC 7239)."""
    if not value:
        return None
    for part in value.split(";"):
        key, _, node = part.strip().partition("=")
        if key.lower() == "for":
            node = node.strip('"')
            if node.startswith("["):
                return node[1:].split("]", 1)[0]
            return node.rsplit(":", 1)[0] if node.count(":") == 1 else node
    return None
