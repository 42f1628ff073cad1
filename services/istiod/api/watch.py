"""Watch streams: newline-delimited JSON events for one kind, filtered like a list.

Semantics follow the apiserver: events newer than the requested `resourceVersion`; with none (or
"0") a synthetic ADDED per current object first; with a selector, an object that starts or
stops matching appears as ADDED or DELETED; a revision older than the history gets one ERROR
event (410 Expired) and the stream ends; BOOKMARKs only when the client allows them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from mesh.resources.kind import ResourceKind
from mesh.selectors import FieldSelector, LabelSelector

from ..repository import Repository, matches
from ..store.history import History, TooOld
from ..store.state import ADDED, DELETED, MODIFIED, Change, Stored
from . import tables

INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass
class WatchRequest:
    """What one watch asks for."""

    kind: ResourceKind
    namespace: str | None
    labels: LabelSelector | None
    fields: FieldSelector | None
    resource_version: str | None
    as_table: bool = False
    bookmarks: bool = False
    send_initial_events: bool = False
    timeout: float | None = None
    bookmark_interval: float = 30.0


def expired_event(err: TooOld) -> bytes:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": str(err),
        "reason": "Expired",
        "code": 410,
    }
    return orjson.dumps({"type": "ERROR", "object": status}) + b"\n"


class WatchStream:
    """Produces the byte lines of one watch."""

    def __init__(self, repo: Repository, history: History, req: WatchRequest):
        self.repo = repo
        self.history = history
        self.req = req
        self._columns_sent = False

    def _encode(self, event_type: str, obj: Stored) -> bytes:
        if self.req.as_table:
            body = tables.table(self.req.kind, [obj], obj.revision, with_columns=not self._columns_sent)
            self._columns_sent = True
            return orjson.dumps({"type": event_type, "object": body}) + b"\n"
        return b'{"type":"' + event_type.encode() + b'","object":' + obj.json + b"}\n"

    def _bookmark(self, revision: int, initial_end: bool = False) -> bytes:
        meta: dict = {"resourceVersion": str(revision)}
        if initial_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        obj = {"kind": self.req.kind.kind, "apiVersion": self.req.kind.api_version, "metadata": meta}
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

    def _translate(self, change: Change) -> tuple[str, Stored] | None:
        """The event this change is for this watcher, or None (other kind, namespace, selector)."""
        obj = change.obj
        req = self.req
        if obj.kind != req.kind.key or (req.namespace is not None and obj.namespace != req.namespace):
            return None
        now = matches(obj.data, req.labels, req.fields)
        if change.op == DELETED:
            return (DELETED, obj) if now else None
        was = change.prev is not None and matches(change.prev.data, req.labels, req.fields)
        if change.op == MODIFIED:
            if now and was:
                return MODIFIED, obj
            if now:
                return ADDED, obj
            return (DELETED, obj) if was else None
        return (ADDED, obj) if now else None

    async def events(self) -> AsyncIterator[bytes]:
        req = self.req
        rv = req.resource_version
        deadline = time.monotonic() + req.timeout if req.timeout else None
        if rv in (None, "", "0") or req.send_initial_events:
            items, cursor = self.repo.list(req.kind, req.namespace, req.labels, req.fields)
            if rv not in (None, "", "0") and req.send_initial_events:
                cursor = max(cursor, int(rv))
            for obj in items:
                yield self._encode(ADDED, obj)
            if req.send_initial_events and req.bookmarks:
                yield self._bookmark(cursor, initial_end=True)
        else:
            try:
                cursor = int(rv)
            except ValueError:
                cursor = -1
            try:
                self.history.since(cursor)
            except TooOld as e:
                yield expired_event(e)
                return
        last_bookmark = time.monotonic()
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            wait = req.bookmark_interval if req.bookmarks else 60.0
            if deadline is not None:
                wait = min(wait, deadline - now)
            changed = await self.history.wait_for_change(cursor, timeout=wait)
            if changed:
                try:
                    changes = self.history.since(cursor)
                except TooOld as e:  # this watcher fell behind the history
                    yield expired_event(e)
                    return
                chunk = []
                for change in changes:
                    event = self._translate(change)
                    if event is not None:
                        chunk.append(self._encode(*event))
                if changes:
                    cursor = changes[-1].revision
                if chunk:
                    yield b"".join(chunk)
                    await asyncio.sleep(0)
            if req.bookmarks and time.monotonic() - last_bookmark >= req.bookmark_interval:
                last_bookmark = time.monotonic()
                yield self._bookmark(cursor)
