"""The in-memory view of the store and the transaction a mutation runs in (no I/O here).

istiod is the only writer of its database, so the committed state is mirrored in memory: reads,
lists and watches are served from here, and mutations decide against it. Object dicts are
immutable once stored (they are shared by the index, the watch history and responses): every
change stores a new dict.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

Json = dict[str, Any]
Key = tuple[str, str, str]  # (kind key, namespace, name)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass(eq=False, slots=True)
class Stored:
    """One object version. `data` must not be mutated."""

    kind: str
    namespace: str
    name: str
    revision: int
    data: Json
    _json: bytes | None = None

    @property
    def key(self) -> Key:
        return (self.kind, self.namespace, self.name)

    @property
    def uid(self) -> str:
        return self.data["metadata"].get("uid", "")

    @property
    def json(self) -> bytes:
        """The object serialized once and reused by every response and watch event."""
        if self._json is None:
            self._json = orjson.dumps(self.data)
        return self._json


@dataclass(frozen=True, slots=True)
class Change:
    """One revision: what happened to which object."""

    revision: int
    op: str
    obj: Stored  # the new version; for DELETED the last version, stamped with the deletion revision
    prev: Stored | None  # the version before a MODIFIED or DELETED


class Index:
    """Current objects, by kind, then namespace, then name."""

    def __init__(self) -> None:
        self._by_kind: dict[str, dict[str, dict[str, Stored]]] = {}
        self.revision = 0

    def get(self, kind: str, namespace: str, name: str) -> Stored | None:
        return self._by_kind.get(kind, {}).get(namespace, {}).get(name)

    def list(self, kind: str, namespace: str | None = None) -> Iterator[Stored]:
        """Objects of `kind` (in one namespace, or all), ordered by namespace then name."""
        spaces = self._by_kind.get(kind, {})
        if namespace is not None:
            names = spaces.get(namespace, {})
            for name in sorted(names):
                yield names[name]
            return
        for ns in sorted(spaces):
            names = spaces[ns]
            for name in sorted(names):
                yield names[name]

    def count(self, kind: str | None = None) -> int:
        kinds = [kind] if kind else list(self._by_kind)
        return sum(len(names) for k in kinds for names in self._by_kind.get(k, {}).values())

    def put(self, obj: Stored) -> None:
        self._by_kind.setdefault(obj.kind, {}).setdefault(obj.namespace, {})[obj.name] = obj

    def remove(self, kind: str, namespace: str, name: str) -> None:
        spaces = self._by_kind.get(kind, {})
        names = spaces.get(namespace)
        if names is not None:
            names.pop(name, None)
            if not names:
                del spaces[namespace]

    def apply(self, change: Change) -> None:
        if change.op == DELETED:
            self.remove(*change.obj.key)
        else:
            self.put(change.obj)
        self.revision = change.revision


_GONE = object()


@dataclass
class Txn:
    """A mutation's view: reads see staged writes first; writes stamp the next revisions.

    A batch of mutations runs in one parent Txn; each mutation gets a child, merged into the
    parent only if the mutation succeeds, so one failing request never leaks into another.
    """

    index: Index
    next_revision: int
    parent: Txn | None = None
    changes: list[Change] = field(default_factory=list)
    _staged: dict[Key, Any] = field(default_factory=dict)

    def child(self) -> Txn:
        return Txn(self.index, self.next_revision, parent=self)

    def commit_into_parent(self) -> None:
        assert self.parent is not None
        self.parent._staged.update(self._staged)
        self.parent.changes.extend(self.changes)
        self.parent.next_revision = self.next_revision

    def _lookup(self, key: Key) -> Any:
        txn: Txn | None = self
        while txn is not None:
            if key in txn._staged:
                return txn._staged[key]
            txn = txn.parent
        return self.index.get(*key)

    def get(self, kind: str, namespace: str, name: str) -> Stored | None:
        found = self._lookup((kind, namespace, name))
        return None if found is _GONE else found

    def list(self, kind: str, namespace: str | None = None) -> list[Stored]:
        """Current objects of a kind as this transaction sees them."""
        out: dict[Key, Stored] = {o.key: o for o in self.index.list(kind, namespace)}
        chain: list[Txn] = []
        txn: Txn | None = self
        while txn is not None:
            chain.append(txn)
            txn = txn.parent
        for t in reversed(chain):  # oldest staging first, newest wins
            for key, value in t._staged.items():
                if key[0] != kind or (namespace is not None and key[1] != namespace):
                    continue
                if value is _GONE:
                    out.pop(key, None)
                else:
                    out[key] = value
        return [out[k] for k in sorted(out)]

    def write(self, kind: str, namespace: str, name: str, data: Json) -> Stored:
        """Store `data` (a new dict, owned from now on) as the next revision of the object."""
        revision = self.next_revision
        self.next_revision += 1
        data["metadata"]["resourceVersion"] = str(revision)
        prev = self.get(kind, namespace, name)
        obj = Stored(kind, namespace, name, revision, data)
        self._staged[obj.key] = obj
        self.changes.append(Change(revision, MODIFIED if prev else ADDED, obj, prev))
        return obj

    def delete(self, kind: str, namespace: str, name: str) -> Stored:
        """Delete the object; the returned last version carries the deletion's revision."""
        prev = self.get(kind, namespace, name)
        assert prev is not None, "delete of a missing object"
        revision = self.next_revision
        self.next_revision += 1
        data = {**prev.data, "metadata": {**prev.data["metadata"], "resourceVersion": str(revision)}}
        obj = Stored(kind, namespace, name, revision, data)
        self._staged[obj.key] = _GONE
        self.changes.append(Change(revision, DELETED, obj, prev))
        return obj
