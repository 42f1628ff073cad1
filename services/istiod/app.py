"""istiod's wiring: the app factory and its lifespan (store, writer, relay, routes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mesh.resources.core import NAMESPACE
from mesh.resources.registry import Registry, default_registry

from . import errors
from .admission import Admission
from .api import discovery
from .api.http import AGGREGATED_DISCOVERY, error_response, json_response, wants_aggregated_discovery
from .api.openapi import OpenAPI
from .api.resources import ResourceHandler
from .auth import ADMIN, READER, Authenticator, Principal, ensure_token_file
from .metrics import Metrics
from .node_tokens import NodeTokenSigner
from .nodes import NodeService
from .repository import Repository
from .sa_tokens import ServiceAccountTokens
from .settings import IstiodSettings
from .store import sql
from .store.history import History
from .store.relay import Relay
from .store.state import Index
from .store.writer import Writer

log = logging.getLogger("istiod")

BUILTIN_NAMESPACES = ("default", "istio-system")


@dataclass
class Components:
    """What the routes use; built in the lifespan, never at import time."""

    registry: Registry
    auth: Authenticator
    repo: Repository
    handler: ResourceHandler
    openapi: OpenAPI
    metrics: Metrics
    relay: Relay
    index: Index
    signer: NodeTokenSigner
    ready: bool = False


def build_authenticator(settings: IstiodSettings) -> Authenticator:
    auth = Authenticator()
    state = settings.state_dir
    auth.add(ensure_token_file(state / "admin-token"), Principal("admin", ADMIN, ("system:masters",)))
    auth.add(ensure_token_file(state / "reader-token"), Principal("reader", READER, ("mesh:readers",)))
    if settings.token_auth_file:
        auth.load_token_file(Path(settings.token_auth_file))
    return auth


def create_app(settings: IstiodSettings) -> FastAPI:
    """The ASGI app. Nothing touches the database or Redis until the lifespan starts."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_state_dir()
        engine = sql.make_engine(settings.effective_database_url)
        store_uid = await asyncio.to_thread(sql.prepare, engine)
        loaded = await asyncio.to_thread(sql.load, engine, settings.watch_history)
        index = Index()
        for obj in loaded.objects:
            index.put(obj)
        index.revision = loaded.revision
        history = History(settings.watch_history, loaded.revision)
        history.load(loaded.history, loaded.revision)
        metrics = Metrics()
        relay = Relay(engine, settings.redis_url, store_uid, stream=settings.change_stream)
        registry = default_registry()

        def on_commit(changes: list) -> None:
            relay.notify(changes)
            metrics.revision.set(index.revision)

        writer = Writer(engine, index, history, on_commit=on_commit)
        repo = Repository(index, writer, Admission(registry, settings.service_cidr))
        signer = NodeTokenSigner.load_or_create(settings.state_dir / "node-token-key.pem")
        nodes = NodeService(repo, index, signer, timedelta(seconds=settings.node_token_ttl))
        sa_tokens = ServiceAccountTokens(index, signer)
        handler = ResourceHandler(registry, repo, history, metrics, nodes, settings.bookmark_interval, sa_tokens)
        auth = build_authenticator(settings)
        auth.extra.append(nodes.authenticate)
        comp = Components(registry, auth, repo, handler, OpenAPI(registry), metrics, relay, index, signer)
        app.state.components = comp
        tasks = [
            asyncio.create_task(writer.run(), name="writer"),
            asyncio.create_task(relay.run(), name="relay"),
        ]
        tasks.append(asyncio.create_task(_track_relay(comp, writer), name="relay-progress"))
        try:
            for ns in BUILTIN_NAMESPACES:
                await repo.ensure(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            metrics.revision.set(index.revision)
            comp.ready = True
            log.info("istiod ready", extra={"revision": index.revision, "objects": index.count()})
            yield
        finally:
            comp.ready = False
            for task in tasks:
                task.cancel()
            # Bounded: shutting down must not hang on a stuck connection (SIGTERM means stop).
            _, stuck = await asyncio.wait(tasks, timeout=5)
            if stuck:
                log.warning("tasks did not stop in time", extra={"tasks": [t.get_name() for t in stuck]})
            engine.dispose()

    # istiod has its own metrics; FastAPI's OpenTelemetry hooks would only cost time per request.
    app = FastAPI(
        title="istiod",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    _routes(app)
    return app


async def _track_relay(comp: Components, writer: Writer) -> None:
    while True:
        await asyncio.sleep(0.5)
        writer.published_revision = comp.relay.published
        comp.metrics.published.set(comp.relay.published)
        comp.metrics.outbox_lag.set(max(0, comp.index.revision - comp.relay.published))


def _components(request: Request) -> Components:
    return request.app.state.components


def _principal(request: Request) -> Principal:
    return _components(request).auth.authenticate(request.headers.get("authorization"))


def _routes(app: FastAPI) -> None:
    @app.exception_handler(errors.ApiError)
    async def _api_error(_request: Request, exc: errors.ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(errors.internal(type(exc).__name__))

    @app.get("/healthz", include_in_schema=False)
    @app.get("/livez", include_in_schema=False)
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        comp = getattr(request.app.state, "components", None)
        if comp is None or not comp.ready:
            return PlainTextResponse("not ready", status_code=503)
        return PlainTextResponse("ok")

    @app.get("/.well-known/jwks.json", include_in_schema=False)
    async def jwks(request: Request) -> Response:
        # Public keys of node tokens: the CA and xDS verify tokens with them (no token needed).
        return json_response(_components(request).signer.jwks())

    @app.get("/version", include_in_schema=False)
    async def version() -> Response:
        return json_response(discovery.version_info())

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        _principal(request)
        return Response(generate_latest(_components(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api", include_in_schema=False)
    async def api_root(request: Request) -> Response:
        comp, _ = _components(request), _principal(request)
        if wants_aggregated_discovery(request):
            return json_response(discovery.aggregated(comp.registry, core=True), media_type=AGGREGATED_DISCOVERY)
        return json_response(discovery.api_versions())

    @app.get("/apis", include_in_schema=False)
    async def apis_root(request: Request) -> Response:
        comp, _ = _components(request), _principal(request)
        if wants_aggregated_discovery(request):
            return json_response(discovery.aggregated(comp.registry, core=False), media_type=AGGREGATED_DISCOVERY)
        return json_response(discovery.api_group_list(comp.registry))

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    @app.api_route("/api/{version}/{rest:path}", methods=methods, include_in_schema=False)
    @app.api_route("/api/{version}", methods=methods, include_in_schema=False)
    async def core_resources(request: Request, version: str, rest: str = "") -> Response:
        comp = _components(request)
        return await comp.handler.handle(request, _principal(request), "", version, rest.split("/") if rest else [])

    @app.api_route("/apis/{group}/{version}/{rest:path}", methods=methods, include_in_schema=False)
    @app.api_route("/apis/{group}/{version}", methods=methods, include_in_schema=False)
    async def group_resources(request: Request, group: str, version: str, rest: str = "") -> Response:
        comp = _components(request)
        return await comp.handler.handle(request, _principal(request), group, version, rest.split("/") if rest else [])

    @app.get("/apis/{group}", include_in_schema=False)
    async def api_group(request: Request, group: str) -> Response:
        comp, _ = _components(request), _principal(request)
        body = discovery.api_group(comp.registry, group)
        if body is None:
            raise errors.path_not_found()
        return json_response(body)

    @app.get("/openapi/v3", include_in_schema=False)
    async def openapi_index(request: Request) -> Response:
        comp, _ = _components(request), _principal(request)
        return json_response(comp.openapi.index())

    @app.get("/openapi/v3/{path:path}", include_in_schema=False)
    async def openapi_group_version(request: Request, path: str) -> Response:
        comp, _ = _components(request), _principal(request)
        doc = comp.openapi.by_group_version.get(path)
        if doc is None:
            raise errors.path_not_found()
        return json_response(doc)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_merged(request: Request) -> Response:
        comp, _ = _components(request), _principal(request)
        return json_response(comp.openapi.merged)
