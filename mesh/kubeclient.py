"""An asyncio client for istiod's Kubernetes-shaped API: get, list, watch, create, patch, delete,
and an informer (list + watch into a local cache, relisting after 410 Gone or a lost stream).

Every component other than istiod reads and writes configuration only through this API (DESIGN
§3), so the same code can talk to a real Kubernetes API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("mesh.kubeclient")

Json = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """Where a kind lives: `Resource("", "v1", "pods")`."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


PODS = Resource("", "v1", "pods")
NODES = Resource("", "v1", "nodes", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
SERVICES = Resource("", "v1", "services")
GATEWAYS = Resource("gateway.networking.k8s.io", "v1", "gateways")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts")


class ApiStatusError(Exception):
    """The API answered with an error Status."""

    def __init__(self, code: int, reason: str, message: str):
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message


class Expired(ApiStatusError):
    """A watch's resourceVersion is too old (410): relist."""


@dataclass(frozen=True)
class Connection:
    """How to reach istiod: URL, bearer token, and the CA that signs its certificate."""

    url: str
    token: str
    ca_file: str | None = None

    @classmethod
    def from_state_dir(cls, state_dir: Path, token_file: Path | None = None) -> Connection:
        """Find istiod through `{state}/istiod.json`, as istiod itself records it."""
        info = json.loads((state_dir / "istiod.json").read_text())
        token_path = token_file or Path(info.get("admin_token_file") or state_dir / "admin-token")
        return cls(info["url"], token_path.read_text().strip(), info.get("ca_file"))

    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    reason = body.get("reason") or response.reason_phrase
    message = body.get("message") or response.text[:200]
    error = Expired if response.status_code == 410 else ApiStatusError
    raise error(response.status_code, reason, message)


class KubeClient:
    """Typed-enough access to the API. Use as an async context manager."""

    def __init__(self, conn: Connection, timeout: float = 30.0):
        self.conn = conn
        self._http = httpx.AsyncClient(
            base_url=conn.url,
            headers={"Authorization": f"Bearer {conn.token}"},
            verify=conn.verify(),
            timeout=httpx.Timeout(timeout, read=None),
        )

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_path(self, path: str) -> Json:
        """GET any API path (e.g. `/.well-known/jwks.json`) as JSON."""
        response = await self._http.get(path)
        _raise_for_status(response)
        return response.json()

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> Json:
        response = await self._http.get(res.path(namespace, name))
        _raise_for_status(response)
        return response.json()

    async def list(
        self, res: Resource, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""
    ) -> tuple[list[Json], str]:
        """Items and the list's resourceVersion."""
        params = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        response = await self._http.get(res.path(namespace), params=params)
        _raise_for_status(response)
        body = response.json()
        return body["items"], body["metadata"]["resourceVersion"]

    async def create(self, res: Resource, obj: Json, namespace: str | None = None) -> Json:
        response = await self._http.post(res.path(namespace), json=obj)
        _raise_for_status(response)
        return response.json()

    async def create_subresource(
        self, res: Resource, name: str, sub: str, body: Json, namespace: str | None = None
    ) -> Json:
        """POST to a subresource, e.g. a ServiceAccount's `token` (the TokenRequest API)."""
        response = await self._http.post(res.path(namespace, name, sub), json=body)
        _raise_for_status(response)
        return response.json()

    async def patch(
        self, res: Resource, name: str, patch: Json, namespace: str | None = None, *, status: bool = False
    ) -> Json:
        """A JSON merge patch (of the status subresource with `status=True`)."""
        response = await self._http.patch(
            res.path(namespace, name, "status" if status else None),
            content=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        _raise_for_status(response)
        return response.json()

    async def delete(self, res: Resource, name: str, namespace: str | None = None) -> Json:
        response = await self._http.delete(res.path(namespace, name))
        _raise_for_status(response)
        return response.json()

    async def watch(
        self,
        res: Resource,
        resource_version: str,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> AsyncIterator[tuple[str, Json]]:
        """Events after `resource_version`, with bookmarks, until the server ends the stream."""
        params = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true"}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        async with self._http.stream("GET", res.path(namespace), params=params) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for_status(response)
            async for line in response.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event["object"]
                    error = Expired if status.get("code") == 410 else ApiStatusError
                    raise error(status.get("code", 500), status.get("reason", ""), status.get("message", ""))
                yield event["type"], event["object"]


Handler = Callable[[str, Json, Json | None], None]  # (event type, object, previous object)


class Informer:
    """A local cache of one kind kept current by list + watch.

    `synced` is set after the first list. Handlers run for every change, with the previous
    version of the object (None when new). After a 410 or a broken stream the informer relists
    and reports the difference as ADDED / MODIFIED / DELETED, so the cache is never stale for
    longer than a reconnect.
    """

    def __init__(self, client: KubeClient, res: Resource, *, field_selector: str = "", label_selector: str = ""):
        self.client = client
        self.res = res
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.cache: dict[tuple[str, str], Json] = {}
        self.synced = asyncio.Event()
        self.handlers: list[Handler] = []
        self.resource_version = ""

    @staticmethod
    def key(obj: Json) -> tuple[str, str]:
        meta = obj["metadata"]
        return meta.get("namespace", ""), meta["name"]

    def _emit(self, event: str, obj: Json, prev: Json | None) -> None:
        for handler in self.handlers:
            try:
                handler(event, obj, prev)
            except Exception:
                log.exception("informer handler failed")

    async def relist(self) -> None:
        items, rv = await self.client.list(
            self.res, field_selector=self.field_selector, label_selector=self.label_selector
        )
        fresh = {self.key(o): o for o in items}
        for key, old in list(self.cache.items()):
            if key not in fresh:
                del self.cache[key]
                self._emit("DELETED", old, old)
        for key, obj in fresh.items():
            prev = self.cache.get(key)
            self.cache[key] = obj
            if prev is None:
                self._emit("ADDED", obj, None)
            elif prev["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", obj, prev)
        self.resource_version = rv
        self.synced.set()

    def apply(self, event: str, obj: Json) -> None:
        """Fold one watch event into the cache."""
        if event == "BOOKMARK":
            self.resource_version = obj["metadata"]["resourceVersion"]
            return
        key = self.key(obj)
        prev = self.cache.get(key)
        if event == "DELETED":
            self.cache.pop(key, None)
        else:
            self.cache[key] = obj
        self.resource_version = obj["metadata"].get("resourceVersion", self.resource_version)
        self._emit(event, obj, prev)

    async def run(self) -> None:
        """List, then watch forever; relist on 410 and reconnect with back-off on errors."""
        delay = 0.2
        need_list = True
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                async for event, obj in self.client.watch(
                    self.res,
                    self.resource_version,
                    field_selector=self.field_selector,
                    label_selector=self.label_selector,
                ):
                    self.apply(event, obj)
                    delay = 0.2
            except Expired:
                need_list = True
                continue
            except (httpx.HTTPError, ApiStatusError, OSError) as e:
                log.warning("watch of %s interrupted: %s", self.res.plural, e)
                need_list = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def get(self, name: str, namespace: str = "") -> Json | None:
        return self.cache.get((namespace, name))


@contextlib.asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[Informer]:
    """Run an informer for the duration of a block, after its first list."""
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
