"""15008: each CONNECT's `:authority` (`VIP:port`) picks a filter chain (none: 503 at CONNECT),
the peer's identity comes from its verified certificate, and the tunnelled bytes are served as
HTTP/2 (the client preface, or the chain's codec) or HTTP/1.1."""

from __future__ import annotations

import logging

from mesh.hbone import HboneStream
from mesh.hbone.headers import AuthorityError, parse_authority

from ..config import ConfigStore
from ..telemetry import parse_baggage, source_from
from .byte_stream import HboneBytes, StreamClosed
from .downstream_h1 import serve_h1
from .downstream_h2 import PREFACE, H2Server
from .messages import HttpRequest, HttpResponse
from .pipeline import Downstream, Pipeline

log = logging.getLogger("waypoint.inbound")


async def sniff(stream: HboneBytes) -> bytes:
    """The first bytes, enough to tell the HTTP/2 preface from an HTTP/1.1 request line."""
    data = b""
    while len(data) < len(PREFACE) and PREFACE.startswith(data):
        chunk = await stream.read()
        if not chunk:
            break
        data += chunk
    return data


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
        )
        stream.accept()
        self.active += 1
        tunnel = HboneBytes(stream)

        async def handle_request(request: HttpRequest) -> HttpResponse:
            return await self._pipeline.handle(down, request)

        try:
            first = await sniff(tunnel)
            if not first:
                return
            if first.startswith(PREFACE) or chain.codec == "http2":
                await H2Server(tunnel, handle_request).run(first)
            else:
                await serve_h1(tunnel, first, handle_request)
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
