"""A minimal HTTP/1.1 server for the proxies' admin, metrics and readiness ports (ztunnel, waypoint).

These ports answer a handful of GETs from meshctl, Prometheus and probes: one request per
connection, no bodies beyond a small limit, `Connection: close`. A full web framework would add
its start-up time and memory to every node for that; the data path never touches this code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson

from mesh.logs import LogLevels
from mesh.memory_report import memory_report
from mesh.readiness import Readiness

log = logging.getLogger("mesh.admin")
JSON = "application/json"
MAX_HEAD = 16 << 10
READ_TIMEOUT = 10.0
_REASONS = {
    200: "OK",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Response:
    """One answer: status, body and its content type."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[str, dict[str, str]], Awaitable[Response]]  # (method, query) -> response
Routes = dict[str, Handler]


def text(status: int, message: str) -> Response:
    """A plain-text answer ending in a newline."""
    return Response(status, (message + "\n").encode())


async def _serve(routes: Routes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        path, _, query = target.partition("?")
        handler = routes.get(path)
        if handler is None:
            response = text(404, f"no such endpoint {path}; try: {', '.join(sorted(routes))}")
        else:
            response = await handler(method, dict(parse_qsl(query, keep_blank_values=True)))
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError, ConnectionError):
        writer.close()
        return
    except Exception:
        log.exception("admin handler failed")
        response = text(500, "internal error")
    reason = _REASONS.get(response.status, "")
    writer.write(
        f"HTTP/1.1 {response.status} {reason}\r\nContent-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n".encode()
        + response.body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


async def serve(host: str, port: int, routes: Routes) -> asyncio.Server:
    """Start answering `routes` (exact paths) on host:port."""
    return await asyncio.start_server(lambda r, w: _serve(routes, r, w), host, port, limit=MAX_HEAD, reuse_address=True)


# --- the routes both proxies serve ---------------------------------------------------------------------


class Exposition(Protocol):
    """Metrics that render themselves in Prometheus' text format."""

    def exposition(self) -> bytes: ...


def admin_routes(proxy: str, config_dump: Callable[[], Any], quit_: Callable[[], None]) -> Routes:
    """`/config_dump` (the JSON `config_dump()` returns), `/debug/memory` (mesh/memory_report.py),
    `/logging` (GET shows the log levels, `POST ?level=SPEC` or `?reset` changes them: mesh/logs.py),
    `POST /quitquitquit` (calls `quit_`), and an index naming them, for `proxy` (ztunnel, waypoint)."""

    async def dump(_method: str, _query: dict[str, str]) -> Response:
        return Response(200, orjson.dumps(config_dump(), option=orjson.OPT_INDENT_2), JSON)

    async def quit_route(method: str, _query: dict[str, str]) -> Response:
        if method != "POST":
            return text(405, "use POST /quitquitquit")
        quit_()
        return text(200, "OK: draining")

    async def memory(_method: str, _query: dict[str, str]) -> Response:
        return Response(200, orjson.dumps(memory_report(), option=orjson.OPT_INDENT_2), JSON)

    levels = LogLevels(proxy)

    async def logging_route(method: str, query: dict[str, str]) -> Response:
        if "level" not in query and "reset" not in query:
            return text(200, levels.describe())
        if method != "POST":
            return text(405, "use POST /logging?level=SPEC (or ?reset) to change the levels")
        try:
            if "reset" in query:
                levels.reset()
            else:
                levels.set(query["level"])
        except ValueError as e:
            return text(400, f"bad level: {e}; nothing changed")
        log.info("log levels changed", extra={"levels": levels.spec()})
        return text(200, levels.describe())

    async def index(_method: str, _query: dict[str, str]) -> Response:
        return text(200, f"{proxy} admin: /config_dump, /debug/memory, /logging, /quitquitquit (POST)")

    return {
        "/": index,
        "/config_dump": dump,
        "/debug/memory": memory,
        "/logging": logging_route,
        "/quitquitquit": quit_route,
    }


def metrics_routes(metrics: Exposition, content_type: str) -> Routes:
    """`/stats/prometheus` (Istio's path) and `/metrics`, both the exposition."""

    async def scrape(_method: str, _query: dict[str, str]) -> Response:
        return Response(200, metrics.exposition(), content_type)

    return {"/stats/prometheus": scrape, "/metrics": scrape}


def readiness_routes(readiness: Readiness) -> Routes:
    """`/healthz/ready`: 200 once every registered token is ready, else 503 naming the rest."""

    async def ready(_method: str, _query: dict[str, str]) -> Response:
        if readiness.ready:
            return text(200, "ready")
        return text(503, "not ready: waiting for " + ", ".join(readiness.pending()))

    return {"/healthz/ready": ready}
