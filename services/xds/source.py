"""Where mesh-xds's configuration comes from: a list of every watched kind from istiod, then the
change stream `mesh:changes` followed through a consumer group from that list's revision.

A gap in the stream (trimmed, or Redis lost it) or a lost connection means: list again and
report the differences as changes, so the generated resources converge on istiod's state and
nothing is lost. Events carry their object, so following the stream costs istiod nothing. Secrets
(`STREAM_ONLY`) are never listed (the reader token may not) and arrive as references without
data; they only trigger reconcile jobs (docs/ingress.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mesh.changes import STREAM, ChangeEvent, Consumer, GapError
from mesh.kubeclient import ApiStatusError, KubeClient, Resource
from mesh.resources.core.secret import secret_reference
from mesh.resources.registry import default_registry

from .model import SECRETS, STREAM_ONLY, WATCHED, Change, ConfigStore

log = logging.getLogger("mesh-xds.source")


def resources_for(kinds: tuple[str, ...]) -> dict[str, Resource]:
    """API locations of the watched kinds, from the shared kind registry."""
    registry = default_registry()
    out = {}
    for key in kinds:
        kind = registry.by_key(key)
        if kind is None:
            raise ValueError(f"unknown kind {key}")
        out[key] = Resource(kind.group, kind.version, kind.plural, kind.namespaced)
    return out


class Source:
    """Keeps a ConfigStore current and reports each batch of changes."""

    def __init__(
        self,
        kube: KubeClient,
        redis_url: str,
        store: ConfigStore,
        on_changes: Callable[[list[Change]], None],
        *,
        stream: str = STREAM,
        group: str = "mesh-xds",
        kinds: tuple[str, ...] = WATCHED,
    ):
        self.kube = kube
        self.redis_url = redis_url
        self.store = store
        self.on_changes = on_changes
        self.stream = stream
        self.group = group
        self.kinds = kinds
        self.locations = resources_for(kinds)
        self.synced = asyncio.Event()
        self.resyncs = 0

    async def resync(self) -> int:
        """List every kind; returns the revision to follow the stream from."""
        start: int | None = None
        changes: list[Change] = []
        for key in self.kinds:
            items, revision = await self.kube.list(self.locations[key])
            start = int(revision) if start is None else start
            changes += self.store.replace_kind(key, items, int(revision))
        self.resyncs += 1
        if changes:
            self.on_changes(changes)
        self.synced.set()
        return start or 0

    async def run(self) -> None:
        delay = 0.2
        while True:
            redis = Redis.from_url(self.redis_url, socket_timeout=10, socket_connect_timeout=3)
            try:
                start = await self.resync()
                consumer = Consumer(redis, start, stream=self.stream, group=self.group, consumer=socket.gethostname())
                await consumer.start()
                log.info("following the change stream", extra={"from_revision": start, "group": self.group})
                delay = 0.2
                while True:
                    self._apply(await consumer.read())
            except GapError as e:
                log.warning("change stream gap (%s): listing again", e)
                continue
            except (RedisError, OSError, httpx.HTTPError, ApiStatusError) as e:
                log.warning("source interrupted: %s", e)
            finally:
                await redis.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _apply(self, events: list[ChangeEvent]) -> None:
        changes = []
        for event in events:
            if (event.kind not in self.locations and event.kind not in STREAM_ONLY) or not event.object:
                continue
            obj = event.decoded()
            if event.kind == SECRETS:
                obj = secret_reference(obj)  # the relay sends no data; never keep any if it did
            change = self.store.apply(event.kind, obj, event.revision, deleted=event.op == "DELETED")
            if change is not None:
                changes.append(change)
        if changes:
            self.on_changes(changes)
