"""The outbox relay: publishes committed changes to the Redis stream, in revision order.

The outbox is the truth; the stream is a copy. The relay asks Redis where the stream ends and
publishes every outbox row after that point, so a Redis that was down, restarted empty, or had
its stream deleted is refilled from the outbox (as far as it is retained) with nothing lost and,
thanks to revision-numbered entry IDs, nothing duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine

from mesh.changes import STREAM, ChangeEvent, Publisher
from mesh.resources.core.secret import SECRET, secret_reference

from . import sql
from .state import Change

log = logging.getLogger("istiod.relay")


def stream_payload(kind: str, data: bytes) -> bytes:
    """The object as the stream carries it. Secrets travel as a reference only (name, uid,
    resourceVersion, type: docs/ingress.md): their values stay in istiod, readable with the admin
    token, and never reach Redis or the logs of the stream's consumers."""
    if kind != SECRET.key or not data:
        return data
    return orjson.dumps(secret_reference(orjson.loads(data)))


class Relay:
    """One task that keeps `mesh:changes` caught up with the outbox."""

    def __init__(
        self,
        engine: Engine,
        redis_url: str,
        store_uid: str,
        *,
        stream: str = STREAM,
        batch: int = 1000,
        max_pending: int = 20_000,
    ):
        self._engine = engine
        self._redis_url = redis_url
        self._store_uid = store_uid
        self._stream = stream
        self._batch = batch
        self._max_pending = max_pending
        self._pending: list[ChangeEvent] = []
        self._caught_up = False  # False: the outbox may hold rows the pending list lacks
        self._wake = asyncio.Event()
        self.published = 0  # newest revision known to be in the stream
        self.connected = False

    def notify(self, changes: list[Change]) -> None:
        """Called by the writer after each commit: hand over the new changes without a DB read."""
        self._pending.extend(
            ChangeEvent(
                c.revision,
                c.obj.kind,
                c.obj.namespace,
                c.obj.name,
                c.op,
                c.obj.uid,
                stream_payload(c.obj.kind, c.obj.json),
            )
            for c in changes
        )
        if len(self._pending) > self._max_pending:
            self._pending.clear()  # Redis is away for long; the outbox has it all
            self._caught_up = False
        self._wake.set()

    async def run(self) -> None:
        delay = 0.2
        while True:
            redis = Redis.from_url(self._redis_url, socket_timeout=5, socket_connect_timeout=2)
            try:
                publisher = Publisher(redis, self._stream)
                if await publisher.claim(self._store_uid):
                    log.warning("stream %s carried another store's changes; reset it", self._stream)
                self.published = await publisher.top()
                self._caught_up = False
                self.connected = True
                delay = 0.2
                log.info("relay connected; stream at revision %d", self.published)
                await self._pump(publisher)
            except (RedisError, OSError) as e:
                if self.connected:
                    log.warning("relay lost Redis: %s", e)
                self.connected = False
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(redis.aclose(), 2)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _pump(self, publisher: Publisher) -> None:
        while True:
            events = self._take_pending()
            if events is None:
                rows = await asyncio.to_thread(sql.outbox_after, self._engine, self.published, self._batch)
                events = [
                    ChangeEvent(
                        r["revision"],
                        r["kind"],
                        r["namespace"],
                        r["name"],
                        r["op"],
                        r["uid"],
                        stream_payload(r["kind"], r["data"].encode()),
                    )
                    for r in rows
                ]
            if not events:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=2.0)
                except TimeoutError:
                    await publisher.top()  # a cheap liveness probe of the connection
                continue
            self.published = await publisher.publish(events, self.published)

    def _take_pending(self) -> list[ChangeEvent] | None:
        """Pending events if they continue the stream exactly; None means "read the outbox"."""
        pending = [e for e in self._pending if e.revision > self.published]
        self._pending = pending
        if pending and pending[0].revision == self.published + 1:
            self._pending = []
            return pending
        if pending:
            self._pending = []  # a hole before them: the outbox read will cover everything
            self._caught_up = False
        return None
