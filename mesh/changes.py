"""The change stream `mesh:changes`: publishing revisions and consuming them in order.

Each entry's Redis ID is `{revision}-0` and it carries the object as of that revision, so a
consumer can apply changes without asking istiod for each object. Redis refuses an ID that is not greater than the
stream's last one, which gives the producer exactly-once publication for free (a retry after a
crash cannot duplicate an entry) and guarantees consumers see revisions in order. Consumers
resume from the last revision they applied; when the next entry is not exactly the following
revision (the stream was trimmed, or Redis lost its data), they get `GapError` and must resync
from istiod with a list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

STREAM = "mesh:changes"
DEFAULT_MAXLEN = 50_000  # entries carry whole objects; a consumer further behind relists


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One revision as published: which object changed and how."""

    revision: int
    kind: str  # ResourceKind.key: "pods", "security.istio.io/authorizationpolicies"
    namespace: str
    name: str
    op: str  # ADDED, MODIFIED, DELETED
    uid: str = ""
    object: bytes = b""  # the object as JSON at this revision (for DELETED: its last state)

    def fields(self) -> dict[str, str | bytes]:
        return {
            "revision": str(self.revision),
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "op": self.op,
            "uid": self.uid,
            "object": self.object,
        }

    @classmethod
    def from_fields(cls, fields: dict) -> ChangeEvent:
        def raw(key: str) -> bytes | str:
            return fields.get(key) or fields.get(key.encode()) or b""

        def text(key: str) -> str:
            value = raw(key)
            return value.decode() if isinstance(value, bytes) else str(value)

        obj = raw("object")
        return cls(
            int(text("revision")),
            text("kind"),
            text("namespace"),
            text("name"),
            text("op"),
            text("uid"),
            obj if isinstance(obj, bytes) else obj.encode(),
        )

    def decoded(self) -> dict:
        """The object carried by the event (empty when the producer did not include it)."""
        return orjson.loads(self.object) if self.object else {}


def entry_id(revision: int) -> str:
    return f"{revision}-0"


def revision_of(entry: bytes | str) -> int:
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.split("-", 1)[0])


class GapError(Exception):
    """The stream does not continue from the consumer's revision: resync from istiod."""

    def __init__(self, expected: int, found: int):
        super().__init__(f"change stream gap: expected revision {expected}, found {found}")
        self.expected = expected
        self.found = found


def epoch_key(stream: str) -> str:
    return f"{stream}:epoch"


class Publisher:
    """Appends change events to the stream, skipping what is already there."""

    def __init__(self, redis: Redis, stream: str = STREAM, maxlen: int = DEFAULT_MAXLEN):
        self.redis = redis
        self.stream = stream
        self.maxlen = maxlen

    async def claim(self, store_uid: str) -> bool:
        """Make the stream carry `store_uid`'s history; True when it had another's (reset)."""
        current = await self.redis.get(epoch_key(self.stream))
        if current is not None and current.decode() == store_uid:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.stream)
        pipe.set(epoch_key(self.stream), store_uid)
        await pipe.execute()
        return current is not None

    async def top(self) -> int:
        """The newest revision the stream has ever held (0 for a new or lost stream)."""
        try:
            info = await self.redis.xinfo_stream(self.stream)
        except ResponseError:  # no such key
            return 0
        last = info.get("last-generated-id") or info.get(b"last-generated-id") or b"0-0"
        return revision_of(last)

    async def publish(self, events: Iterable[ChangeEvent], top: int) -> int:
        """Append events newer than `top`, in order; returns the new top."""
        fresh = [e for e in events if e.revision > top]
        if not fresh:
            return top
        pipe = self.redis.pipeline(transaction=False)
        for e in fresh:
            pipe.xadd(self.stream, e.fields(), id=entry_id(e.revision), maxlen=self.maxlen, approximate=True)
        results = await pipe.execute(raise_on_error=False)
        for e, result in zip(fresh, results, strict=True):
            # "equal or smaller" means already published (by a run that crashed before noting it).
            if isinstance(result, ResponseError) and "equal or smaller" not in str(result):
                raise result
            top = max(top, e.revision)
        return top


class Consumer:
    """Reads the stream in revision order from a starting revision, detecting gaps.

    With a `group`, reads go through a Redis consumer group (XREADGROUP + XACK) whose position is
    set to the starting revision by `start()`; Redis then knows how far each consumer of the
    change stream has got (`XINFO GROUPS`), which is what operators look at.
    """

    def __init__(
        self,
        redis: Redis,
        after: int,
        stream: str = STREAM,
        block_ms: int = 1000,
        count: int = 500,
        epoch: str | None = None,
        group: str | None = None,
        consumer: str = "consumer-1",
    ):
        self.redis = redis
        self.stream = stream
        self.revision = after
        self.block_ms = block_ms
        self.count = count
        self.epoch = epoch  # the store uid the revisions belong to; learnt on first read if None
        self.group = group
        self.consumer = consumer

    async def start(self) -> None:
        """Place the consumer group at the starting revision (creating group and stream if needed)."""
        if self.group is None:
            return
        try:
            await self.redis.xgroup_create(self.stream, self.group, id=entry_id(self.revision), mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
            await self.redis.xgroup_setid(self.stream, self.group, id=entry_id(self.revision))

    async def _fetch(self) -> list:
        if self.group is None:
            return await self.redis.xread({self.stream: entry_id(self.revision)}, count=self.count, block=self.block_ms)
        return await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=self.count, block=self.block_ms
        )

    async def read(self) -> list[ChangeEvent]:
        """The next events (possibly none after `block_ms`). Raises GapError on a gap."""
        epoch = await self.redis.get(epoch_key(self.stream))
        epoch_text = epoch.decode() if epoch is not None else None
        if self.epoch is None:
            self.epoch = epoch_text
        elif epoch_text is not None and epoch_text != self.epoch:
            raise GapError(self.revision + 1, 0)  # another store's history: resync
        reply = await self._fetch()
        events: list[ChangeEvent] = []
        for _stream, entries in reply or []:
            if self.group is not None and entries:
                await self.redis.xack(self.stream, self.group, *[entry for entry, _ in entries])
            for entry, fields in entries:
                event = ChangeEvent.from_fields(fields)
                if revision_of(entry) != event.revision:
                    raise ValueError(f"stream entry {entry!r} does not carry its own revision")
                if event.revision != self.revision + 1:
                    raise GapError(self.revision + 1, event.revision)
                self.revision = event.revision
                events.append(event)
        return events

    async def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        while True:
            for event in await self.read():
                yield event
