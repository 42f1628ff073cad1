"""mesh-xds's wiring: source → debounce → translation → tables → streams, plus the admin port."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from google.protobuf.message import Message
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mesh.jobs import GATEWAY_RECONCILE
from mesh.kubeclient import NODES, ApiStatusError, Connection, KubeClient
from mesh.node_auth import NodeAuthenticator
from mesh.settings import host_port
from mesh.tokens import AUD_XDS

from .debounce import Debounce
from .gateway_jobs import affected_ingress_gateways, ingress_gateways
from .generators.envoy import EnvoyDeltas, EnvoyTranslator
from .generators.envoy import to_any as envoy_any
from .generators.index import Translator
from .generators.resources import address_keys, to_any
from .hub import Hub
from .jwks import JwksCache, resolve_in_mesh
from .model import WATCHED, Change, ConfigStore
from .protocol import Resource, Table
from .secrets import SecretCache, istiod_fetcher
from .server import AdsServicer, add_to_server
from .settings import XdsSettings
from .source import Source
from .status import sync_status
from .status_jobs import ConditionQueue
from .types import ADDRESS, AUTHORIZATION, ENVOY_TYPES
from .visibility import NodeScope, WaypointAccess, combine
from .waypoint_jobs import ReconcileQueue, affected_waypoints, waypoint_gateways

log = logging.getLogger("mesh-xds")


class XdsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pushes = Counter("xds_pushes_total", "Translation batches pushed.", registry=self.registry)
        self.changes = Counter("xds_changes_total", "Configuration changes consumed.", registry=self.registry)
        self.translate = Histogram("xds_translate_seconds", "Time to translate a batch.", registry=self.registry)
        self.resources = Gauge("xds_resources", "Resources served, by type.", ["type"], registry=self.registry)
        self.streams = Gauge("xds_streams", "Open streams.", registry=self.registry)
        self.nacks = Counter("xds_nacks_total", "NACKs received, by type.", ["type"], registry=self.registry)


def version_of(body: bytes) -> str:
    """A resource's version is a digest of its content: stable across restarts for the same
    content (so initial_resource_versions spare a reconnecting client any resend), and never the
    same for different content."""
    return hashlib.sha256(body).hexdigest()[:16]


def next_table(
    table: Table | None, updated: dict, removed: set[str], with_keys: bool, pack: Callable[[Message], Any] = to_any
) -> Table:
    """The new immutable table of a type after a delta; `pack` wraps a message for the wire."""
    old = table or Table()
    resources, keys = dict(old.resources), dict(old.keys)
    for name in removed | set(updated):
        previous = resources.pop(name, None)
        for key in previous.keys if previous else ():
            if keys.get(key) == name:
                del keys[key]
    for name, message in updated.items():
        body = pack(message)
        aliases = tuple(address_keys(message)) if with_keys else ()
        resources[name] = Resource(name, version_of(body.SerializeToString()), body, aliases)
        for key in aliases:
            keys[key] = name
    return Table(old.version + 1, resources, keys)


class Pipeline:
    """Collects changes, debounces, translates (ztunnel and Envoy types), and publishes new tables
    to the hub."""

    def __init__(
        self,
        store: ConfigStore,
        hub: Hub,
        metrics: XdsMetrics,
        debounce: Debounce,
        conditions: ConditionQueue | None = None,
        reconcile: ReconcileQueue | None = None,
    ):
        self.store = store
        self.hub = hub
        self.metrics = metrics
        self.debounce = debounce
        self.conditions = conditions
        self.reconcile = reconcile
        self.jwks = JwksCache(self.on_jwks, resolve=lambda uri: resolve_in_mesh(uri, self.store))
        self.secrets = SecretCache(self.on_secrets)  # its fetcher is set by run() when a token allows
        self.translator = Translator()
        self.envoy = EnvoyTranslator(jwks=self.jwks.get, secrets=self.secrets.get)
        self.scope = NodeScope()
        hub.visibility = combine(self.scope.visibility, WaypointAccess(self.envoy.readers).visibility)
        self.pending: list[Change] = []
        self.pending_jwks: set[str] = set()
        self.pending_secrets: set[tuple[str, str]] = set()
        self.rebuilt = False
        self._arrived = asyncio.Event()
        self.ready = asyncio.Event()

    def on_changes(self, changes: list[Change]) -> None:
        self.pending.extend(changes)
        self.debounce.add(time.monotonic(), len(changes))
        self.metrics.changes.inc(len(changes))
        self._arrived.set()

    def on_jwks(self, uris: set[str]) -> None:
        """JWKS documents were fetched or changed: re-translate the waypoints inlining them."""
        self.pending_jwks |= uris
        self.debounce.add(time.monotonic(), len(uris))
        self._arrived.set()

    def on_secrets(self, keys: set[tuple[str, str]]) -> None:
        """Secret data was fetched, changed or went: re-translate the gateways that use it."""
        self.pending_secrets |= keys
        self.debounce.add(time.monotonic(), len(keys))
        self._arrived.set()

    async def run(self) -> None:
        while True:
            await self._arrived.wait()
            while not self.debounce.due(time.monotonic()):
                self._arrived.clear()
                wait = max(0.0, (self.debounce.deadline() or 0) - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), wait)
            self._arrived.clear()
            self.debounce.take()
            self.flush()

    def flush(self) -> None:
        changes, self.pending = self.pending, []
        started = time.perf_counter()
        initial = not self.rebuilt
        self.secrets.note_changes(changes)  # a Secret's new resourceVersion: refetch its data
        if initial:
            deltas = self.translator.rebuild(self.store)  # the first batch: everything listed
            envoy_deltas = self.envoy.rebuild(self.store)
            moved = self.scope.rebuild(self.store)
            self.rebuilt = True
        else:
            deltas = self.translator.update(self.store, changes)
            envoy_deltas = self.envoy.update(self.store, changes)
            moved = self.scope.apply(changes)
        self._publish({**deltas.by_type_url(), **envoy_deltas.by_type_url()})
        self._envoy_extras(envoy_deltas)
        if self.pending_jwks:
            uris, self.pending_jwks = self.pending_jwks, set()
            jwks_deltas = self.envoy.jwks_changed(self.store, uris)
            self._publish(jwks_deltas.by_type_url())
            self._envoy_extras(jwks_deltas)
        if self.pending_secrets:
            keys, self.pending_secrets = self.pending_secrets, set()
            secret_deltas = self.envoy.secrets_changed(self.store, keys)
            self._publish(secret_deltas.by_type_url())
            self._envoy_extras(secret_deltas)
        self.secrets.retain(self.envoy.secrets_read())
        for conn in list(self.hub.connections.values()):
            if conn.peer.node in moved:  # its node gained or lost a namespace: recompute its policies
                conn.note_changes(AUTHORIZATION, None)
        if self.conditions is not None and deltas.conditions_changed:
            self.conditions.note(self.translator.conditions, set(deltas.conditions_changed))
        if self.reconcile is not None:
            # At start-up every waypoint is reconciled (what changed while mesh-xds was away is unknown).
            self.reconcile.note(waypoint_gateways(self.store) if initial else affected_waypoints(self.store, changes))
            ingress = ingress_gateways(self.store) if initial else affected_ingress_gateways(self.store, changes)
            self.reconcile.note(ingress, GATEWAY_RECONCILE)
        self.metrics.translate.observe(time.perf_counter() - started)
        self.metrics.pushes.inc()
        self.ready.set()

    def _publish(self, by_type: dict) -> None:
        for type_url, delta in by_type.items():
            if delta.empty and type_url in self.hub.tables:
                continue
            pack = envoy_any if type_url in ENVOY_TYPES else to_any
            table = next_table(
                self.hub.tables.get(type_url), dict(delta.updated), set(delta.removed), type_url == ADDRESS, pack
            )
            self.hub.publish(type_url, table, set(delta.updated) | set(delta.removed))
            self.metrics.resources.labels(type_url.rsplit(".", 1)[-1]).set(len(table.resources))

    def _envoy_extras(self, envoy_deltas: EnvoyDeltas) -> None:
        """Who may read a waypoint resource changed (its Gateway's service account): re-evaluate
        those names for every stream; and queue the RequestAuthentication conditions."""
        for type_url, names in envoy_deltas.access_changed.items():
            for conn in list(self.hub.connections.values()):
                conn.note_changes(type_url, set(names))
        if self.conditions is not None and envoy_deltas.conditions_changed:
            self.conditions.note(self.envoy.conditions, set(envoy_deltas.conditions_changed))


def connection(settings: XdsSettings) -> Connection:
    state = settings.state_dir
    token_file = Path(settings.token_file or state / "reader-token")
    if settings.istiod:
        ca = str(settings.istiod_ca_file) if settings.istiod_ca_file else None
        return Connection(settings.istiod, token_file.read_text().strip(), ca)
    conn = Connection.from_state_dir(state, token_file)
    return Connection(conn.url, conn.token, str(settings.istiod_ca_file)) if settings.istiod_ca_file else conn


def secrets_connection(settings: XdsSettings, conn: Connection) -> Connection | None:
    """istiod with the token mesh-xds reads Secret data with, or None when there is none."""
    token_file = settings.secrets_token_file or settings.state_dir / "admin-token"
    if not token_file.exists():
        log.warning("no token to read Secrets with: HTTPS listeners of ingress gateways get no chain")
        return None
    return Connection(conn.url, token_file.read_text().strip(), conn.ca_file)


def admin_app(hub: Hub, metrics: XdsMetrics, pipeline: Pipeline) -> Starlette:
    async def syncz(_request: Request) -> Response:
        return JSONResponse(sync_status(hub))

    async def prometheus(_request: Request) -> Response:
        metrics.streams.set(len(hub.connections))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def readyz(_request: Request) -> Response:
        ok = pipeline.ready.is_set()
        return PlainTextResponse("ok" if ok else "not ready", status_code=200 if ok else 503)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/debug/syncz", syncz),
            Route("/metrics", prometheus),
            Route("/readyz", readyz),
            Route("/healthz", healthz),
        ]
    )


async def run(settings: XdsSettings) -> None:
    state = settings.ensure_state_dir()
    conn = connection(settings)
    store, hub, metrics = ConfigStore(), Hub(), XdsMetrics()
    hub.on_nack = lambda c, type_url, error: metrics.nacks.labels(type_url.rsplit(".", 1)[-1]).inc()
    conditions = ConditionQueue(settings.redis_url)
    reconcile = ReconcileQueue(settings.redis_url)
    pipeline = Pipeline(
        store, hub, metrics, Debounce(settings.debounce_quiet, settings.debounce_max), conditions, reconcile
    )
    secrets_conn = secrets_connection(settings, conn)
    secrets_kube = KubeClient(secrets_conn) if secrets_conn is not None else None
    if secrets_kube is not None:
        pipeline.secrets.fetch = istiod_fetcher(secrets_kube)
    async with KubeClient(conn) as kube, contextlib.AsyncExitStack() as stack:
        if secrets_kube is not None:
            await stack.enter_async_context(secrets_kube)
        source = Source(
            kube,
            settings.redis_url,
            store,
            pipeline.on_changes,
            stream=settings.change_stream,
            group=settings.consumer_group,
        )
        nodes = NodeAuthenticator(lambda: _jwks(kube), lambda _n: None, lambda name: _node(kube, name), AUD_XDS)
        tasks = [
            asyncio.create_task(source.run(), name="source"),
            asyncio.create_task(pipeline.run(), name="push"),
            asyncio.create_task(conditions.run(), name="conditions"),
            asyncio.create_task(reconcile.run(), name="waypoint-reconcile"),
            asyncio.create_task(pipeline.jwks.run(), name="jwks"),
            asyncio.create_task(pipeline.secrets.run(), name="secrets"),
        ]
        await asyncio.wait_for(source.synced.wait(), 60)
        pipeline.flush()  # serve the listed state before accepting streams
        server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 10_000)])
        add_to_server(AdsServicer(hub, nodes), server)
        if settings.plaintext:
            log.warning("serving gRPC without TLS (--plaintext): for local debugging only")
            server.add_insecure_port(_address(settings.listen))
        else:
            server.add_secure_port(_address(settings.listen), _credentials(settings, state))
            if settings.mtls_listen:
                server.add_secure_port(_address(settings.mtls_listen), _credentials(settings, state, mtls=True))
        await server.start()
        admin = None
        if settings.admin_listen:
            ahost, aport = host_port(settings.admin_listen)
            config = uvicorn.Config(
                admin_app(hub, metrics, pipeline),
                host=ahost,
                port=aport,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
            admin = uvicorn.Server(config)
            admin.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            tasks.append(asyncio.create_task(admin.serve(), name="admin"))
        log.info(
            "mesh-xds serving",
            extra={
                "listen": settings.listen,
                "mtls_listen": settings.mtls_listen,
                "objects": sum(1 for _ in _objects(store)),
            },
        )
        await _until_stopped()
        log.info("mesh-xds stopping")
        if admin is not None:
            admin.should_exit = True
        await server.stop(grace=3)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _objects(store: ConfigStore) -> Iterator[dict]:
    for kind in WATCHED:
        yield from store.list(kind)


def _address(listen: str) -> str:
    host, port = host_port(listen)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _credentials(settings: XdsSettings, state: Path, mtls: bool = False) -> grpc.ServerCredentials:
    """TLS for the main port (ztunnels authenticate with node tokens); with `mtls`, TLS that
    requires a client certificate chaining to the mesh's roots, which gRPC then exposes, verified,
    to the servicer (peers.certificate_identity).

    Two ports because grpcio's server credentials either never ask for a client certificate
    (`require_client_auth=False`: a workload's certificate is then never even sent) or require one;
    the request-but-do-not-require mode of gRPC core is not exposed to Python."""
    cert = Path(settings.cert_file or state / "xds-cert.pem")
    key = Path(settings.key_file or state / "xds-key.pem")
    roots = Path(settings.roots_file or state / "root-cert.pem")
    for path in (cert, key, roots):
        if not path.exists():
            raise FileNotFoundError(path)
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())], root_certificates=roots.read_bytes(), require_client_auth=mtls
    )


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _node(kube: KubeClient, name: str) -> dict | None:
    try:
        return await kube.get(NODES, name)
    except ApiStatusError as e:
        if e.code == 404:
            return None
        raise


async def _jwks(kube: KubeClient) -> dict:
    return await kube.get_path("/.well-known/jwks.json")
