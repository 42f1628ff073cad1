"""HBONE end to end on 127.0.0.1: client -> mTLS + HTTP/2 CONNECT -> server -> TCP app.

Real certificates from the CA's signing code, real sockets (loopback only), asyncio and uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from h2.errors import ErrorCodes

from mesh.hbone import (
    ContextsByAddress,
    HboneClient,
    HboneError,
    HboneServer,
    HboneStream,
    IdentityMismatch,
    Pool,
    PoolKey,
    SpliceResult,
    StreamRefused,
    StreamResetError,
    TlsError,
    Tunnel,
    open_tcp,
    parse_authority,
    splice,
    start_splice,
)
from tests.unit.hbone.pki import Pki

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
WEB = "spiffe://cluster.local/ns/default/sa/web"
DENIED_PORT = 1  # the test server's stand-in for an L4 policy: CONNECT to it gets 401


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@dataclass
class Apps:
    """TCP applications behind the HBONE server."""

    echo: int = 0
    sink: int = 0  # reads to EOF, then answers the byte count
    greeter: int = 0  # says hello, half-closes, then reads to EOF into `greeted`
    resetter: int = 0  # reads one byte, then closes with RST
    greeted: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)


@dataclass
class Mesh:
    apps: Apps
    server: HboneServer
    relays: list[SpliceResult]
    client_ctx: ssl.SSLContext

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    async def connect(self, expected: set[str] | None = None) -> HboneClient:
        return await HboneClient.connect(self.address, self.client_ctx, expected_identities=expected or {WEB})


async def start_apps() -> tuple[Apps, list[asyncio.Server]]:
    apps = Apps()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):  # tests that reset a stream reset this side too
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while data := await reader.read(1 << 16):
            total += len(data)
        writer.write(str(total).encode())
        writer.close()

    async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        writer.write_eof()
        apps.greeted.put_nowait(await reader.read())
        writer.close()

    async def resetter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    servers = []
    for name, handler in (("echo", echo), ("sink", sink), ("greeter", greeter), ("resetter", resetter)):
        server = await asyncio.start_server(handler, HOST, 0)
        setattr(apps, name, server.sockets[0].getsockname()[1])
        servers.append(server)
    return apps, servers


def relay_handler(relays: list[SpliceResult]):  # type: ignore[no-untyped-def]
    """The inbound side ztunnel will have: policy (401), upstream connect (503), 200, splice."""

    async def handle(stream: HboneStream) -> None:
        host, port = parse_authority(stream.authority)
        if port == DENIED_PORT:
            stream.reject(401)
            return
        try:
            upstream = await open_tcp(host, port)
        except OSError:
            stream.reject(503)
            return
        stream.accept()
        relays.append(await splice(stream, upstream))

    return handle


@pytest.fixture
async def mesh(pki: Pki) -> AsyncIterator[Mesh]:
    apps, app_servers = await start_apps()
    relays: list[SpliceResult] = []
    server = HboneServer(pki.server("web"), relay_handler(relays), trust_domain="cluster.local")
    await server.listen(HOST, 0)
    yield Mesh(apps, server, relays, pki.client("sleep"))
    await server.close(grace=1.0)
    for app in app_servers:
        app.close()


class Dialer:
    """A pool connector to the test server that counts its dials."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.dials = 0

    async def __call__(self, key: PoolKey) -> HboneClient:
        self.dials += 1
        ctx = self.mesh.client_ctx
        return await HboneClient.connect(key.destination, ctx, expected_identities=key.destination_identities)


async def read_all(stream: HboneStream) -> bytes:
    parts = []
    while data := await stream.read():
        parts.append(data)
    return b"".join(parts)


async def test_relay_to_echo_with_identities_and_byte_counts(mesh: Mesh) -> None:
    client = await mesh.connect()
    assert client.peer_identity == WEB
    stream = await client.open(f"{HOST}:{mesh.apps.echo}", [("forwarded", f'for="{HOST}:4000"')])
    assert stream.status == 200
    payload = os.urandom(300_000)
    await stream.write(payload)
    stream.close_write()
    assert await read_all(stream) == payload
    await stream.wait_closed()
    await asyncio.sleep(0.05)
    assert mesh.relays == [SpliceResult(to_stream=len(payload), from_stream=len(payload))]
    assert stream.bytes_sent == stream.bytes_received == len(payload)
    client.close()


async def test_fifty_concurrent_streams_on_one_connection(mesh: Mesh) -> None:
    client = await mesh.connect()

    async def one(n: int) -> bool:
        stream = await client.open(f"{HOST}:{mesh.apps.echo}")
        payload = os.urandom(20_000 + n * 1000)
        writer = asyncio.ensure_future(stream.write(payload))
        stream.close_write() if writer.done() else writer.add_done_callback(lambda _: stream.close_write())
        echoed = await read_all(stream)
        await writer
        return echoed == payload

    assert all(await asyncio.gather(*(one(n) for n in range(50))))
    assert mesh.server.connections == 1
    client.close()


async def test_half_close_from_the_client(mesh: Mesh) -> None:
    """The client's FIN reaches the app as a FIN; the app's answer after it still comes back."""
    client = await mesh.connect()
    stream = await client.open(f"{HOST}:{mesh.apps.sink}")
    await stream.write(b"x" * 12345)
    stream.close_write()
    assert await read_all(stream) == b"12345"
    client.close()


async def test_half_close_from_the_app(mesh: Mesh) -> None:
    """The app's FIN reaches the client as end of stream, and the client can still send."""
    client = await mesh.connect()
    stream = await client.open(f"{HOST}:{mesh.apps.greeter}")
    assert await read_all(stream) == b"hello"
    await stream.write(b"still talking")
    stream.close_write()
    assert await asyncio.wait_for(mesh.apps.greeted.get(), 5) == b"still talking"
    await asyncio.wait_for(stream.wait_closed(), 5)
    client.close()


@pytest.mark.parametrize(("port", "status"), [(DENIED_PORT, 401), (9, 503)])
async def test_refusals_carry_the_status(mesh: Mesh, port: int, status: int) -> None:
    client = await mesh.connect()
    with pytest.raises(StreamRefused) as refused:
        await client.open(f"{HOST}:{port}")
    assert refused.value.status == status
    assert client.active_streams == 0
    stream = await client.open(f"{HOST}:{mesh.apps.echo}")  # the connection is still fine
    await stream.write(b"ok")
    stream.close_write()
    assert await read_all(stream) == b"ok"
    client.close()


async def test_an_app_reset_resets_the_stream(mesh: Mesh) -> None:
    client = await mesh.connect()
    stream = await client.open(f"{HOST}:{mesh.apps.resetter}")
    await stream.write(b"x")
    with pytest.raises(StreamResetError) as reset:
        await read_all(stream)
    assert reset.value.error_code == ErrorCodes.CONNECT_ERROR and reset.value.remote
    client.close()


async def test_a_wrong_server_identity_is_refused(mesh: Mesh) -> None:
    with pytest.raises(IdentityMismatch) as refused:
        await mesh.connect({"spiffe://cluster.local/ns/default/sa/db"})
    assert refused.value.actual == WEB


async def test_a_client_of_a_foreign_root_gets_nothing(mesh: Mesh, pki: Pki) -> None:
    foreign = Pki().workload("sleep")
    from mesh.hbone import client_context

    ctx = client_context(foreign.chain_pem, foreign.key_pem, pki.bundle_pem)
    with pytest.raises(HboneError):
        client = await HboneClient.connect(mesh.address, ctx, expected_identities={WEB})
        await asyncio.wait_for(client.open(f"{HOST}:{mesh.apps.echo}"), 5)
    await asyncio.sleep(0.05)
    assert mesh.server.handshake_failures == 1 and not mesh.relays


async def test_tls12_is_refused(mesh: Mesh, pki: Pki) -> None:
    ctx = pki.client("sleep")
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(TlsError):
        await HboneClient.connect(mesh.address, ctx, expected_identities={WEB})


async def test_server_certificate_chosen_by_destination_address(pki: Pki) -> None:
    contexts = ContextsByAddress()
    contexts.set("127.0.0.1", pki.server("web"))
    contexts.set("127.0.0.2", pki.server("db"))
    server = HboneServer(contexts, relay_handler([]))
    for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        await server.listen(host, 0)
    port_of = dict(server.addresses)
    client_ctx = pki.client("sleep")
    try:
        web = await HboneClient.connect(("127.0.0.1", port_of["127.0.0.1"]), client_ctx, expected_identities={WEB})
        db_identity = "spiffe://cluster.local/ns/default/sa/db"
        db = await HboneClient.connect(
            ("127.0.0.2", port_of["127.0.0.2"]), client_ctx, expected_identities={db_identity}
        )
        assert (web.peer_identity, db.peer_identity) == (WEB, db_identity)
        with pytest.raises(TlsError):  # no workload at that address: no certificate, no handshake
            await HboneClient.connect(("127.0.0.3", port_of["127.0.0.3"]), client_ctx)
    finally:
        await server.close(grace=0.5)


async def test_pool_reuses_one_connection_and_opens_more_when_full(mesh: Mesh) -> None:
    dialer = Dialer(mesh)
    pool = Pool(dialer, max_streams=100)
    key = PoolKey(SLEEP, frozenset({WEB}), mesh.address)
    for _ in range(20):  # sequential streams: one connection
        stream = await pool.open(key, f"{HOST}:{mesh.apps.echo}")
        await stream.write(b"x")
        assert await stream.read() == b"x"
        stream.close_write()
        await stream.wait_closed()
    assert dialer.dials == 1 and pool.connections(key) == 1
    # 150 at once: the first connection fills at 100, a second takes the rest.
    streams = await asyncio.gather(*(pool.open(key, f"{HOST}:{mesh.apps.echo}") for _ in range(150)))
    assert dialer.dials == 2 and pool.connections(key) == 2 and mesh.server.connections == 2
    for stream in streams:
        stream.close_write()
    await asyncio.gather(*(read_all(s) for s in streams))
    pool.close()


async def test_pool_releases_idle_connections(mesh: Mesh) -> None:
    pool = Pool(Dialer(mesh), idle_timeout=0.2)
    key = PoolKey(SLEEP, frozenset({WEB}), mesh.address)
    stream = await pool.open(key, f"{HOST}:{mesh.apps.echo}")
    await asyncio.sleep(0.4)
    assert pool.connections(key) == 1  # busy connections are never idle
    stream.close_write()
    await read_all(stream)
    await stream.wait_closed()
    await asyncio.sleep(0.4)
    assert pool.connections() == 0
    for _ in range(50):
        if mesh.server.connections == 0:
            break
        await asyncio.sleep(0.02)
    assert mesh.server.connections == 0


async def test_server_drain_finishes_open_streams_and_refuses_new_ones(mesh: Mesh) -> None:
    client = await mesh.connect()
    stream = await client.open(f"{HOST}:{mesh.apps.echo}")
    closing = asyncio.ensure_future(mesh.server.close(grace=5.0))
    await asyncio.sleep(0.05)
    with pytest.raises(StreamResetError) as refused:
        await client.open(f"{HOST}:{mesh.apps.echo}")
    assert refused.value.error_code == ErrorCodes.REFUSED_STREAM  # safe to retry elsewhere
    await stream.write(b"last words")
    stream.close_write()
    assert await read_all(stream) == b"last words"
    await asyncio.wait_for(closing, 5)
    await asyncio.wait_for(client.wait_closed(), 5)
    assert client.closing


async def test_pool_retries_a_refused_stream_on_a_new_connection(mesh: Mesh) -> None:
    dialer = Dialer(mesh)
    pool = Pool(dialer)
    key = PoolKey(SLEEP, frozenset({WEB}), mesh.address)
    first = await pool.open(key, f"{HOST}:{mesh.apps.echo}")
    for link in list(mesh.server._links):
        link.close()  # the server drains that connection (as on a ztunnel restart)
    second = await pool.open(key, f"{HOST}:{mesh.apps.echo}")  # refused there, retried on a new one
    assert dialer.dials == 2
    for stream in (first, second):
        await stream.write(b"x")
        stream.close_write()
        assert await read_all(stream) == b"x"
    pool.close()


async def test_an_unread_stream_does_not_stall_the_connection(mesh: Mesh) -> None:
    """Lessons 4 over real sockets: the driver never pauses the shared transport."""
    client = await mesh.connect()
    stuck = await client.open(f"{HOST}:{mesh.apps.echo}")

    async def flood() -> None:  # echoed back, never read: fills every buffer on the way, then waits
        while True:
            await stuck.write(b"\x00" * (1 << 20))

    flooding = asyncio.ensure_future(flood())
    sent = -1
    while stuck.bytes_sent != sent:  # until the flood is held back (by its own stream window)
        sent = stuck.bytes_sent
        await asyncio.sleep(0.3)
    assert not flooding.done()

    async def flowing() -> bytes:
        stream = await client.open(f"{HOST}:{mesh.apps.echo}")
        payload = os.urandom(3 << 20)
        writer = asyncio.ensure_future(stream.write(payload))
        writer.add_done_callback(lambda _: stream.close_write())
        echoed = await read_all(stream)
        return echoed == payload

    assert all(await asyncio.wait_for(asyncio.gather(*(flowing() for _ in range(4))), 20))
    stuck.reset()
    with pytest.raises(StreamResetError):
        await flooding
    client.close()


async def test_a_tunnel_without_a_task_can_be_cut_and_reports_what_it_carried(mesh: Mesh, pki: Pki) -> None:
    """ztunnel's way: the handler starts the tunnel and returns; a drain deadline cuts it."""
    tunnels: list[Tunnel] = []

    async def handle(stream: HboneStream) -> None:
        upstream = await open_tcp(HOST, mesh.apps.echo)
        stream.accept()
        tunnels.append(await start_splice(stream, upstream))

    server = HboneServer(pki.server("web"), handle, trust_domain="cluster.local")
    await server.listen(HOST, 0)
    client = await HboneClient.connect(server.address, mesh.client_ctx, expected_identities={WEB})
    try:
        stream = await client.open(f"{HOST}:{mesh.apps.echo}")
        await stream.write(b"ab")
        assert await stream.read() == b"ab"  # flowing, with no task left on the server side
        (tunnel,) = tunnels
        assert not tunnel.finished.done()
        tunnel.cut(ConnectionAbortedError("drain deadline"))
        result = await tunnel.finished
        assert (result.from_stream, result.to_stream) == (2, 2) and isinstance(result.error, ConnectionAbortedError)
        with pytest.raises(StreamResetError) as reset:
            await read_all(stream)
        assert reset.value.error_code == ErrorCodes.CONNECT_ERROR
    finally:
        client.close()
        await server.close(grace=1.0)


def _live(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


async def test_a_finished_tunnel_is_freed_at_once_without_the_cycle_collector(mesh: Mesh, pki: Pki) -> None:
    """A tunnel, its stream and its socket's transport must not keep each other alive once it
    ended: with no allocation after a burst, the cycle collector may not run for a long time, and
    a ztunnel kept hundreds of finished tunnels (about 8 KB each) after a connection burst."""
    tunnels_started = 0

    async def handle(stream: HboneStream) -> None:
        nonlocal tunnels_started
        upstream = await open_tcp(HOST, mesh.apps.echo)
        stream.accept()
        await start_splice(stream, upstream)
        tunnels_started += 1

    server = HboneServer(pki.server("web"), handle, trust_domain="cluster.local")
    await server.listen(HOST, 0)
    client = await HboneClient.connect(server.address, mesh.client_ctx, expected_identities={WEB})
    gc.collect()
    gc.disable()
    try:
        for ending in ("close", "reset", "close"):
            stream = await client.open(f"{HOST}:{mesh.apps.echo}")
            await stream.write(b"ping")
            assert await stream.read() == b"ping"
            if ending == "close":
                stream.close_write()
                assert await read_all(stream) == b""
            else:
                stream.reset()
            await stream.wait_closed()
        for _ in range(100):  # the last FIN and the transports' close callbacks
            await asyncio.sleep(0.01)
            if _live(Tunnel) == 0:
                break
        assert tunnels_started == 3
        assert _live(Tunnel) == 0, "finished tunnels are only reachable through reference cycles"
    finally:
        gc.enable()
        client.close()
        await server.close(grace=1.0)
