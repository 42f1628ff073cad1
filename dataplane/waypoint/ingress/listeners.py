"""An ingress gateway's listeners (docs/ingress.md, "Data path (contract)"): one TCP server on
`{listen address}:{port}` for every distinct `destination_port` of the Listener `gateway/N/G`,
opened and closed as the Listener changes.

Per connection, on a port whose chains carry TLS: read the ClientHello (client_hello.py), choose
the chain by SNI (chains.py; none: the connection is closed), terminate TLS with that chain's
context (contexts.py, tls_stream.py; a required client certificate is verified there), and take
the source principal from the verified client certificate's URI SAN. On a plaintext port the
port's chain serves. Then the same HTTP/1.1 or HTTP/2 codecs (ALPN `h2` picks HTTP/2) and the
same request pipeline as a waypoint's, with the chain's filters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from ..config import ConfigStore, FilterChain
from ..proxy.byte_stream import ByteStream, StreamClosed, TcpBytes
from ..proxy.messages import HttpRequest, HttpResponse
from ..proxy.pipeline import Downstream, Pipeline
from ..proxy.server import serve_http
from ..telemetry import Source
from .chains import choose_chain, port_changes, uses_tls
from .client_hello import ClientHelloError, parse_client_hello
from .contexts import ChainContexts
from .tls_stream import TlsBytes, TlsHandshakeError

log = logging.getLogger("waypoint.ingress")
HANDSHAKE_TIMEOUT = 10.0  # ClientHello and handshake, as Envoy's default transport_socket_connect_timeout
MAX_HELLO_READS = 64
RETRY_BIND_SECONDS = 1.0


class NoChain(ConnectionError):
    """No filter chain serves this connection (unknown SNI without a default chain)."""


def client_principal(tls: TlsBytes) -> str | None:
    """The verified client certificate's first URI SAN (its SPIFFE id for a mesh client)."""
    cert = tls.ssl.getpeercert()  # {} unless the chain was verified
    uris = [value for kind, value in (cert or {}).get("subjectAltName", ()) if kind == "URI"]
    return uris[0] if uris else None


class IngressListeners:
    """The Gateway's ports (see the module docstring). `reconcile()` after each config change;
    `bound` is set once every port of the current Listener is listening."""

    def __init__(self, store: ConfigStore, pipeline: Pipeline, listen_address: str) -> None:
        self._store = store
        self._pipeline = pipeline
        self._host = listen_address
        self._contexts = ChainContexts(store)
        self._servers: dict[int, asyncio.Server] = {}
        self._failed: dict[int, str] = {}
        self._changed = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self.bound = asyncio.Event()

    @property
    def ports(self) -> list[int]:
        return sorted(self._servers)

    @property
    def active(self) -> int:
        return len(self._connections)

    def changed(self) -> None:
        """The config changed (the xDS client's update hook): reconcile soon."""
        self._changed.set()

    async def reconcile(self) -> None:
        """Open the ports the Listener has and close those it no longer has."""
        by_port = self._store.chains_by_port()
        changes = port_changes(self._servers, by_port)
        for port in changes.close:
            self._servers.pop(port).close()
            log.info("ingress: listener closed", extra={"port": port})
        self._failed = {}
        for port in changes.open:  # a port that could not be bound before is still to open
            try:
                self._servers[port] = await asyncio.start_server(partial(self._accept, port), self._host, port)
            except OSError as e:
                self._failed[port] = str(e)
                log.error("ingress: cannot listen", extra={"port": port, "error": str(e)})
                continue
            log.info("ingress: listening", extra={"address": f"{self._host}:{port}"})
        self._contexts.keep_only(chain.name for chains in by_port.values() for chain in chains)
        if by_port and not self._failed and self._store.complete:
            self.bound.set()

    async def run(self) -> None:
        """Reconcile on every change, and every second while a port could not be bound. Runs
        until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), RETRY_BIND_SECONDS if self._failed else None)
            self._changed.clear()
            await self.reconcile()

    async def _accept(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        raw = TcpBytes(reader, writer)
        try:
            await self._serve(port, raw, writer)
        except (StreamClosed, TlsHandshakeError, ClientHelloError, NoChain, TimeoutError) as e:
            log.info("ingress: connection refused", extra={"port": port, "reason": f"{type(e).__name__}: {e}"})
        finally:
            self._connections.discard(task)
            raw.close()

    async def _serve(self, port: int, raw: TcpBytes, writer: asyncio.StreamWriter) -> None:
        chains = self._store.chains_by_port().get(port, ())
        peer = writer.get_extra_info("peername") or ("", 0)
        local = writer.get_extra_info("sockname") or ("", 0)
        stream: ByteStream = raw
        sni: str | None = None
        principal: str | None = None
        if uses_tls(chains):
            tls, chain, sni = await asyncio.wait_for(self._terminate_tls(raw, chains), HANDSHAKE_TIMEOUT)
            stream, principal = tls, client_principal(tls)
            alpn = tls.ssl.selected_alpn_protocol()
            codec = {"h2": "http2", "http/1.1": "http1"}.get(alpn or "", chain.codec)
        else:
            chain = choose_chain(chains, None)
            if chain is None:
                raise NoChain(f"no filter chain on port {port}")
            codec = chain.codec
        down = Downstream(
            chain=chain,
            vip=local[0],
            port=port,
            source=Source(principal, None, None, None, None, None),
            source_ip=peer[0],
            sni=sni,
        )

        async def handle_request(request: HttpRequest) -> HttpResponse:
            if stream is not raw:
                request.scheme = "https"
            return await self._pipeline.handle(down, request)

        await serve_http(stream, codec, handle_request)

    async def _terminate_tls(
        self, raw: TcpBytes, chains: tuple[FilterChain, ...]
    ) -> tuple[TlsBytes, FilterChain, str | None]:
        data = b""
        for _ in range(MAX_HELLO_READS):
            hello = parse_client_hello(data)
            if hello is not None:
                break
            chunk = await raw.read()
            if not chunk:
                raise StreamClosed("the client closed before its ClientHello")
            data += chunk
        else:
            raise ClientHelloError("the ClientHello did not arrive")
        chain = choose_chain((c for c in chains if c.tls is not None), hello.server_name)
        if chain is None:
            raise NoChain(f"no filter chain for server name {hello.server_name!r}")
        context = self._contexts.get(chain)
        if context is None:
            raise NoChain(f"chain {chain.name}: no usable certificate")
        tls = TlsBytes(raw, context, data)
        await tls.handshake()
        return tls, chain, hello.server_name

    async def close(self, drain_seconds: float) -> None:
        """Stop accepting, let open connections finish for `drain_seconds`, then cut them."""
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle(), drain_seconds)
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _idle(self) -> None:
        while self._connections:  # each turn waits for one connection to end
            await asyncio.wait(set(self._connections), return_when=asyncio.FIRST_COMPLETED)
