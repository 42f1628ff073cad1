"""The JWKS documents mesh-xds inlines into waypoint JWT providers (Istio's default: istiod fetches
`jwksUri` itself, so proxies need no egress to the issuer).

A `jwksUri` naming a Service of the mesh (`http://{name}.{ns}.svc.cluster.local[:port]/…`, or
`…{ns}.svc`) is fetched from one of the Service's ready endpoints (pod IP and target port,
`resolve_in_mesh`), keeping the URI's Host header: there is no cluster DNS here, and the pod
network is routed to the control plane (docs/cluster.md).

`get(uri)` answers from the cache only and never blocks the push path: an unknown URI is queued
and `run()` fetches it in the background (short timeout, bounded size, at most MAX_URIS kept),
refreshes every document every REFRESH seconds and retries failures after 1, 2, 4 … up to RETRY
seconds. When a
document appears or changes, `on_change(uris)` is called so the translator re-translates the
waypoints that inline it; until then (or when it cannot be fetched) the translation fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from .generators.envoy.targets import service_target
from .generators.view import IndexedView
from .model import SERVICES, ConfigStore

log = logging.getLogger("mesh-xds.jwks")

MAX_URIS = 256
MAX_BYTES = 1 << 20
TIMEOUT = 5.0
REFRESH = 20 * 60.0  # Istio's default JWKS refresh interval
RETRY = 60.0  # the longest wait before a failed fetch is retried; the first retries come sooner
FIRST_RETRY = 1.0  # doubled after each failure up to RETRY (an issuer that is still starting)


class JwksError(Exception):
    """A JWKS document could not be fetched or is not one."""


@dataclass
class _Entry:
    document: str | None = None
    due: float = 0.0  # when to fetch next (monotonic)
    error: str = ""
    failures: int = 0


def parse_jwks(body: bytes) -> str:
    """The canonical JSON of a JWKS document (`{"keys": [...]}` with at least one key)."""
    if len(body) > MAX_BYTES:
        raise JwksError(f"document larger than {MAX_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError as e:
        raise JwksError(f"not JSON: {e}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list) or not document["keys"]:
        raise JwksError('not a JWKS: expected {"keys": [...]} with at least one key')
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


class JwksCache:
    """jwksUri → document, fetched in the background. Used from one event loop."""

    def __init__(
        self,
        on_change: Callable[[set[str]], None],
        client: httpx.AsyncClient | None = None,
        resolve: Callable[[str], str | None] | None = None,
    ):
        self.on_change = on_change
        self._client = client
        self._resolve = resolve
        self._entries: dict[str, _Entry] = {}
        self._wake = asyncio.Event()

    def get(self, uri: str) -> str | None:
        """The cached document, or None (the URI is then queued for fetching)."""
        entry = self._entries.get(uri)
        if entry is None:
            if len(self._entries) >= MAX_URIS:
                log.warning("too many jwksUris; not fetching", extra={"uri": uri})
                return None
            self._entries[uri] = _Entry()
            self._wake.set()
            return None
        return entry.document

    def error(self, uri: str) -> str:
        """Why the last fetch of `uri` failed (empty when it did not)."""
        entry = self._entries.get(uri)
        return entry.error if entry else ""

    async def _fetch(self, client: httpx.AsyncClient, uri: str) -> str:
        target = self._resolve(uri) if self._resolve else None
        headers = {"host": urlsplit(uri).netloc} if target else {}
        try:
            response = await client.get(target or uri, headers=headers, timeout=TIMEOUT, follow_redirects=True)
        except httpx.HTTPError as e:
            raise JwksError(f"{type(e).__name__}: {e}") from None
        if response.status_code != 200:
            raise JwksError(f"HTTP {response.status_code}")
        return parse_jwks(response.content)

    async def refresh_due(self, client: httpx.AsyncClient) -> set[str]:
        """Fetch every document that is due; returns the URIs whose document changed."""
        now = time.monotonic()
        changed: set[str] = set()
        for uri, entry in list(self._entries.items()):
            if entry.due > now:
                continue
            try:
                document = await self._fetch(client, uri)
            except JwksError as e:
                entry.failures += 1
                delay = min(RETRY, FIRST_RETRY * 2 ** (entry.failures - 1))
                entry.error, entry.due = str(e), time.monotonic() + delay
                log.warning("fetching JWKS failed", extra={"uri": uri, "error": entry.error, "retry_in_s": delay})
                continue
            entry.error, entry.due, entry.failures = "", time.monotonic() + REFRESH, 0
            if document != entry.document:
                entry.document = document
                changed.add(uri)
        return changed

    async def run(self) -> None:
        """Fetch queued and due documents until cancelled."""
        client = self._client or httpx.AsyncClient(trust_env=False)
        try:
            while True:
                changed = await self.refresh_due(client)
                if changed:
                    self.on_change(changed)
                due = min((e.due for e in self._entries.values()), default=None)
                wait = RETRY if due is None else max(0.5, due - time.monotonic())
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            if self._client is None:
                await client.aclose()


MESH_DOMAINS = (".svc.cluster.local", ".svc")


def resolve_in_mesh(uri: str, store: ConfigStore) -> str | None:
    """The URL to fetch an in-mesh `uri` from: a ready endpoint of the Service it names (plain
    HTTP only); None when the URI does not name a Service of the mesh or it has no endpoint."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    suffix = next((d for d in MESH_DOMAINS if host.endswith(d)), None)
    if parts.scheme != "http" or suffix is None:
        return None
    labels = host[: -len(suffix)].split(".")
    if len(labels) != 2:
        return None
    name, namespace = labels
    view = IndexedView(store)
    svc = view.get(SERVICES, namespace, name)
    target = service_target(view, svc) if svc is not None else None
    endpoints = target.endpoints.get(parts.port or 80, ()) if target is not None else ()
    if not endpoints:
        return None
    endpoint = endpoints[0]
    return urlunsplit(("http", f"{endpoint.ip}:{endpoint.port}", parts.path, parts.query, ""))
