"""SQL persistence: engine set-up, loading the state, writing a batch, reading the outbox.

All functions here are synchronous and run in worker threads; they know nothing of HTTP.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from sqlalchemy import bindparam, create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import Engine

from . import migrate
from .state import DELETED, Change, Key, Stored
from .tables import objects, outbox, store_meta


def make_engine(url: str) -> Engine:
    """An engine for SQLite (WAL, so readers never block the writer) or PostgreSQL."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across application crashes in WAL mode (only an OS crash or power
            # loss can lose the last commits), which is the failure model we promise to survive.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    # No pre-ping: it costs a round trip per checkout on the write path. A connection broken by
    # a PostgreSQL restart fails one batch; the writer then re-reads the store and goes on.
    return create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=False)


def prepare(engine: Engine) -> str:
    """Create or upgrade the schema; returns the store's uid (made on first use)."""
    migrate.upgrade(engine)
    with engine.begin() as conn:
        uid = conn.execute(select(store_meta.c.value).where(store_meta.c.key == "store_uid")).scalar()
        if uid is None:
            uid = str(uuid.uuid4())
            conn.execute(insert(store_meta).values(key="store_uid", value=uid))
    return uid


@dataclass
class Loaded:
    """The state read at start-up."""

    objects: list[Stored]
    revision: int
    history: list[Change]


def load(engine: Engine, history_size: int) -> Loaded:
    """Read every object, the current revision and the newest `history_size` outbox rows."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(objects.c.kind, objects.c.namespace, objects.c.name, objects.c.revision, objects.c.data)
        )
        loaded = [Stored(r.kind, r.namespace, r.name, r.revision, orjson.loads(r.data)) for r in rows]
        revision = conn.execute(select(func.max(outbox.c.revision))).scalar() or 0
        revision = max(revision, max((o.revision for o in loaded), default=0))
        recent = conn.execute(select(outbox).order_by(outbox.c.revision.desc()).limit(history_size)).fetchall()
    history = []
    for r in reversed(recent):
        obj = Stored(r.kind, r.namespace, r.name, r.revision, orjson.loads(r.data))
        prev = None
        if r.prev is not None:
            prev_data = orjson.loads(r.prev)
            prev = Stored(r.kind, r.namespace, r.name, int(prev_data["metadata"]["resourceVersion"]), prev_data)
        history.append(Change(r.revision, r.op, obj, prev))
    # Keep only the contiguous tail ending at the current revision.
    while history and any(b.revision != a.revision + 1 for a, b in itertools.pairwise(history)):
        history.pop(0)
    if history and history[-1].revision != revision:
        history = []
    return Loaded(loaded, revision, history)


def persist(engine: Engine, changes: list[Change], existed: Iterable[Key]) -> None:
    """Write a batch in one transaction: the final state of each touched object and one outbox
    row per change. `existed` names the objects that had a row before the batch.
    """
    before = set(existed)
    final: dict[Key, Change] = {}
    for change in changes:
        final[change.obj.key] = change
    inserts, updates, deletes = [], [], []
    for key, change in final.items():
        row = {"kind": key[0], "namespace": key[1], "name": key[2], "uid": change.obj.uid}
        if change.op == DELETED:
            if key in before:
                deletes.append(row)
        else:
            row |= {"revision": change.revision, "data": change.obj.json.decode()}
            (updates if key in before else inserts).append(row)
    now = int(time.time() * 1000)
    box = [
        {
            "revision": c.revision,
            "kind": c.obj.kind,
            "namespace": c.obj.namespace,
            "name": c.obj.name,
            "uid": c.obj.uid,
            "op": c.op,
            "data": c.obj.json.decode(),
            "prev": c.prev.json.decode() if c.prev is not None and c.op != DELETED else None,
            "created_at": now,
        }
        for c in changes
    ]
    # executemany UPDATE/DELETE: bind names must differ from column names, hence the "b_" prefix.
    key_match = (
        (objects.c.kind == bindparam("b_kind"))
        & (objects.c.namespace == bindparam("b_namespace"))
        & (objects.c.name == bindparam("b_name"))
    )
    with engine.begin() as conn:
        if deletes:
            conn.execute(delete(objects).where(key_match), [_prefixed(r) for r in deletes])
        if updates:
            stmt = (
                update(objects)
                .where(key_match)
                .values(uid=bindparam("b_uid"), revision=bindparam("b_revision"), data=bindparam("b_data"))
            )
            conn.execute(stmt, [_prefixed(r) for r in updates])
        if inserts:
            conn.execute(insert(objects), inserts)
        if box:
            conn.execute(insert(outbox), box)


def _prefixed(row: dict) -> dict:
    return {f"b_{k}": v for k, v in row.items()}


def outbox_after(engine: Engine, revision: int, limit: int) -> list[dict]:
    """Outbox rows after `revision`, oldest first (what the relay has yet to publish)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                outbox.c.revision,
                outbox.c.kind,
                outbox.c.namespace,
                outbox.c.name,
                outbox.c.uid,
                outbox.c.op,
                outbox.c.data,
            )
            .where(outbox.c.revision > revision)
            .order_by(outbox.c.revision)
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]


def compact(engine: Engine, below: int) -> int:
    """Delete outbox rows with a revision below `below`; returns how many went."""
    with engine.begin() as conn:
        return conn.execute(delete(outbox).where(outbox.c.revision < below)).rowcount or 0
