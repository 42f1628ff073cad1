"""The data of the Secrets ingress gateways reference, fetched from istiod (docs/ingress.md,
"Data path (contract)" item 4).

The change stream carries Secrets as references only (no data), and mesh-xds reads istiod with the
reader token, which may not read Secrets; so the Secrets an ingress gateway's translation asks for
are fetched by name with a token allowed to (`--secrets-token-file`, default the admin token of
the state directory). As for JWKS documents (jwks.py), `get()` answers from the cache only and
never blocks the push path: an unknown Secret is queued and `run()` fetches it; `note()` (a
reference from the change stream) refetches when the resourceVersion differs from the data held,
and drops the data of a deleted Secret at once. When data appears, changes or goes,
`on_change(keys)` is called so the translator re-translates the gateways that asked for it.

A failed fetch leaves the Secret without data (its listener gets no chain) unless the data held
is still the current version, and is retried after RETRY seconds; every document is also
refetched every REFRESH seconds, which covers a Secret change lost in a gap of the stream. Logs
name the Secret and the HTTP status or error type, never a value or an error body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpx

from mesh.kubeclient import ApiStatusError, KubeClient, Resource

from .generators.envoy.sds import SecretData, secret_data
from .model import SECRETS, Change, Json

log = logging.getLogger("mesh-xds.secrets")

SECRETS_RESOURCE = Resource("", "v1", "secrets")
MAX_SECRETS = 1024
RETRY = 10.0
REFRESH = 300.0

SecretKey = tuple[str, str]  # (namespace, name)
Fetch = Callable[[str, str], Awaitable[Json | None]]  # None: no such Secret; raises SecretFetchError


class SecretFetchError(Exception):
    """A Secret could not be read; the message names the status or error type only."""


def istiod_fetcher(kube: KubeClient) -> Fetch:
    """Read one Secret from istiod with `kube`'s token; 404 is None."""

    async def fetch(namespace: str, name: str) -> Json | None:
        try:
            return await kube.get(SECRETS_RESOURCE, name, namespace)
        except ApiStatusError as e:
            if e.code == 404:
                return None
            raise SecretFetchError(f"HTTP {e.code}") from None
        except httpx.HTTPError as e:
            raise SecretFetchError(type(e).__name__) from None

    return fetch


@dataclass
class _Entry:
    data: SecretData | None = None
    current: str | None = None  # the resourceVersion the change stream last named (None: unknown)
    due: float = 0.0  # when to fetch next (monotonic)


class SecretCache:
    """(namespace, name) → SecretData. Used from one event loop; `fetch` None means Secrets cannot
    be read (no token), so every TLS listener is left without a chain."""

    def __init__(self, on_change: Callable[[set[SecretKey]], None], fetch: Fetch | None = None):
        self.on_change = on_change
        self.fetch = fetch
        self._entries: dict[SecretKey, _Entry] = {}
        self._wake = asyncio.Event()
        self._full_logged = False

    def get(self, namespace: str, name: str) -> SecretData | None:
        """The data held, or None (an unknown Secret is then queued for fetching)."""
        key = (namespace, name)
        entry = self._entries.get(key)
        if entry is not None:
            return entry.data
        if self.fetch is None:
            return None
        if len(self._entries) >= MAX_SECRETS:
            if not self._full_logged:
                log.warning("too many Secrets referenced; not fetching more", extra={"secret": f"{namespace}/{name}"})
                self._full_logged = True
            return None
        self._entries[key] = _Entry()
        self._wake.set()
        return None

    def note(self, namespace: str, name: str, resource_version: str | None) -> None:
        """A Secret reference from the change stream (None: deleted)."""
        entry = self._entries.get((namespace, name))
        if entry is None:
            return  # nobody asked for it
        entry.current = resource_version
        if resource_version is None:
            had = entry.data is not None
            entry.data, entry.due = None, time.monotonic() + REFRESH
            if had:
                self.on_change({(namespace, name)})
        elif entry.data is None or entry.data.resource_version != resource_version:
            entry.due = 0.0
            self._wake.set()

    def note_changes(self, changes: Iterable[Change]) -> None:
        """`note()` every Secret among a batch of changes."""
        for change in changes:
            if change.key.kind == SECRETS:
                version = (change.new or {}).get("metadata", {}).get("resourceVersion") if change.new else None
                self.note(change.key.namespace, change.key.name, str(version) if change.new else None)

    def retain(self, keys: set[SecretKey]) -> None:
        """Forget the Secrets no translation asks for any more (their data leaves memory)."""
        for key in set(self._entries) - keys:
            del self._entries[key]
        self._full_logged = False

    async def refresh_due(self) -> set[SecretKey]:
        """Fetch every Secret that is due; returns those whose data appeared, changed or went."""
        if self.fetch is None:
            return set()
        changed: set[SecretKey] = set()
        now = time.monotonic()
        for key, entry in list(self._entries.items()):
            if entry.due > now:
                continue
            before = entry.data
            try:
                obj = await self.fetch(*key)
            except SecretFetchError as e:
                log.warning("fetching Secret failed", extra={"secret": "/".join(key), "error": str(e)})
                if before is not None and entry.current not in (None, before.resource_version):
                    entry.data = None  # what is held is stale: no chain rather than an old certificate
                entry.due = time.monotonic() + RETRY
            else:
                entry.data = secret_data(obj) if obj is not None else None
                entry.due = time.monotonic() + REFRESH
            if entry.data != before:
                changed.add(key)
        return changed

    async def run(self) -> None:
        """Fetch queued and due Secrets until cancelled."""
        while True:
            changed = await self.refresh_due()
            if changed:
                self.on_change(changed)
            due = min((e.due for e in self._entries.values()), default=math.inf)
            wait = RETRY if due == math.inf else max(0.05, due - time.monotonic())
            self._wake.clear()
            if any(e.due <= time.monotonic() for e in self._entries.values()):
                continue  # queued while fetching
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
