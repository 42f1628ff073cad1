"""The store's tables (SQLAlchemy Core): objects, the outbox, and store metadata.

`objects` holds the current state, one row per object. `outbox` holds one row per revision,
written in the same transaction as the change it describes: it feeds the Redis change stream
(DESIGN §4) and the watch history replayed to watchers after a restart. Revisions are assigned
by the single writer, so their order is the commit order.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

objects = Table(
    "objects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(128), nullable=False),  # ResourceKind.key: "pods", "security.istio.io/authorizationpolicies"
    Column("namespace", String(253), nullable=False),  # "" for cluster-scoped kinds
    Column("name", String(253), nullable=False),
    Column("uid", String(36), nullable=False),
    Column("revision", BigInteger, nullable=False),  # metadata.resourceVersion
    Column("data", Text, nullable=False),  # the object as JSON
    Index("ux_objects_key", "kind", "namespace", "name", unique=True),
)

outbox = Table(
    "outbox",
    metadata,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(128), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("uid", String(36), nullable=False),
    Column("op", String(16), nullable=False),  # ADDED, MODIFIED, DELETED
    Column("data", Text, nullable=False),  # the object after the change (for DELETED: its last state)
    Column("prev", Text, nullable=True),  # the object before a MODIFIED change, for filtered watches
    Column("created_at", BigInteger, nullable=False),  # unix milliseconds
)

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
