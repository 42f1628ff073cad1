"""What the generators read: the stored objects, with the indexes that keep translation cheap.

`ConfigView` is the read interface every generator takes. `IndexedView` implements it over a
`ConfigStore` and adds what the store cannot answer quickly: the objects of one namespace, the
Services and ServiceEntries that select a set of labels, the workloads a selector matches, the pods
of a node. Istio's ambient index keeps the same indexes (krt namespace and selector indexes in
istio/istio: pilot/pkg/serviceregistry/ambient), so that one pod change costs one pod's work.

Mutation contract: the owner calls `refresh(key)` for every key it knows changed in the store, before
translating; the indexes are then exactly those of the store. `refresh` re-derives a key's entries
from the store's current object, so a key refreshed twice, or refreshed for a change that was later
superseded, is still indexed correctly. Not thread-safe; used by the translation task only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from services.xds.model import (
    AUTHORIZATION_POLICIES,
    PEER_AUTHENTICATIONS,
    PODS,
    SERVICE_ENTRIES,
    SERVICES,
    WORKLOAD_ENTRIES,
    ConfigStore,
    Key,
)

Json = dict[str, Any]

# Kinds listed per namespace, and the workload kinds whose labels selectors are matched against.
NAMESPACED_KINDS = (PODS, WORKLOAD_ENTRIES, SERVICES, SERVICE_ENTRIES, AUTHORIZATION_POLICIES, PEER_AUTHENTICATIONS)
LABELLED_KINDS = (PODS, WORKLOAD_ENTRIES, SERVICE_ENTRIES)
SELECTING_KINDS = (SERVICES, SERVICE_ENTRIES)

_Entry = tuple[dict[Any, set[Any]], Any, Any]  # (table, index in it, member)


class ConfigView(Protocol):
    """Read access to the stored configuration, as generators use it."""

    def get(self, kind: str, namespace: str, name: str) -> Json | None:
        """One object, or None."""

    def list(self, kind: str, namespace: str | None = None) -> Iterable[Json]:
        """Every object of a kind, or of a kind in one namespace."""

    def selecting(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[Json]:
        """The Services (or ServiceEntries) of `namespace` whose selector matches `labels`."""


def meta(obj: Json) -> Json:
    """An object's metadata (never None)."""
    return obj.get("metadata") or {}


def labels_of(obj: Json) -> dict[str, str]:
    """An object's metadata labels (never None)."""
    return meta(obj).get("labels") or {}


def workload_labels(kind: str, obj: Json) -> dict[str, str]:
    """The labels selectors are matched against: a WorkloadEntry's `spec.labels` over its metadata
    labels (Istio selects WorkloadEntries by both); every other kind's metadata labels."""
    labels = labels_of(obj)
    if kind == WORKLOAD_ENTRIES:
        return {**labels, **((obj.get("spec") or {}).get("labels") or {})}
    return labels


def selector_of(kind: str, obj: Json) -> dict[str, str] | None:
    """The labels a Service (`spec.selector`) or ServiceEntry (`spec.workloadSelector.labels`)
    selects workloads by. None or empty selects nothing, as for a Kubernetes Service without selector
    (its endpoints are managed by hand) and Istio's FilterSelectsNonEmpty."""
    spec = obj.get("spec") or {}
    if kind == SERVICES:
        if spec.get("type") == "ExternalName":
            return None  # no ServiceInfo in Istio, so it selects no workload
        return spec.get("selector") or None
    return (spec.get("workloadSelector") or {}).get("labels") or None


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """matchLabels semantics: every selector pair is among the labels (an empty selector matches)."""
    return all(labels.get(k) == v for k, v in selector.items())


class IndexedView:
    """A `ConfigView` over a `ConfigStore`, plus the indexes incremental translation needs."""

    def __init__(self, store: ConfigStore):
        self.store = store
        self._names: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._labels: dict[tuple[str, str, str], set[tuple[str, str]]] = defaultdict(set)
        self._selectors: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
        self._by_node: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._entries: dict[Key, list[_Entry]] = {}  # what each key put in which table, to take it out
        for kind in NAMESPACED_KINDS:
            for obj in store.list(kind):
                self._add(Key(kind, meta(obj).get("namespace", ""), meta(obj)["name"]), obj)

    # --- ConfigView ----------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> Json | None:
        """One object, or None."""
        return self.store.get(kind, namespace, name)

    def list(self, kind: str, namespace: str | None = None) -> Iterator[Json]:
        """Every object of a kind, or of one namespace (indexed for the namespaced kinds)."""
        if namespace is None or kind not in NAMESPACED_KINDS:
            yield from self.store.list(kind, namespace)
            return
        for name in sorted(self._names.get((kind, namespace), ())):
            obj = self.store.get(kind, namespace, name)
            if obj is not None:
                yield obj

    def selecting(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[Json]:
        """The Services or ServiceEntries of `namespace` whose (non-empty) selector matches `labels`."""
        names: set[str] = set()
        for k, v in labels.items():
            names |= self._selectors.get((kind, namespace, k, v), set())
        found = []
        for name in sorted(names):
            obj = self.store.get(kind, namespace, name)
            selector = selector_of(kind, obj) if obj else None
            if selector and selects(selector, labels):
                found.append(obj)
        return found

    # --- reverse lookups for dependency tracking -------------------------------------------------

    def names(self, kind: str, namespace: str) -> set[str]:
        """The names of the objects of a namespaced kind in one namespace."""
        return set(self._names.get((kind, namespace), ()))

    def namespaces(self, kind: str) -> set[str]:
        """The namespaces holding at least one object of a namespaced kind."""
        return {ns for (k, ns), names in self._names.items() if k == kind and names}

    def matching(self, kind: str, namespace: str | None, selector: Mapping[str, str]) -> set[tuple[str, str]]:
        """(namespace, name) of the objects of a labelled kind whose labels `selector` matches, in
        one namespace or (None) in all. An empty selector matches every object."""
        if not selector:
            spaces = [namespace] if namespace is not None else self.namespaces(kind)
            return {(ns, name) for ns in spaces for name in self._names.get((kind, ns), ())}
        # Start from the smallest bucket among the selector's pairs, then check the whole selector.
        buckets = [self._labels.get((kind, k, v), set()) for k, v in selector.items()]
        found = set()
        for ns, name in min(buckets, key=len):
            if namespace is not None and ns != namespace:
                continue
            obj = self.store.get(kind, ns, name)
            if obj is not None and selects(selector, workload_labels(kind, obj)):
                found.add((ns, name))
        return found

    def pods_on_node(self, node: str) -> set[tuple[str, str]]:
        """(namespace, name) of the pods scheduled on `node`."""
        return set(self._by_node.get(node, ()))

    # --- maintenance ---------------------------------------------------------------------------

    def refresh(self, key: Key) -> None:
        """Re-index one key from the store's current object (or drop it when it is gone)."""
        self._remove(key)
        if key.kind in NAMESPACED_KINDS:
            obj = self.store.get(key.kind, key.namespace, key.name)
            if obj is not None:
                self._add(key, obj)

    def _add(self, key: Key, obj: Json) -> None:
        # Per-namespace tables hold bare names; cluster-wide ones hold (namespace, name).
        here = (key.namespace, key.name)
        entries: list[_Entry] = [(self._names, (key.kind, key.namespace), key.name)]
        if key.kind in LABELLED_KINDS:
            entries += [(self._labels, (key.kind, k, v), here) for k, v in workload_labels(key.kind, obj).items()]
        if key.kind in SELECTING_KINDS:
            selector = selector_of(key.kind, obj) or {}
            entries += [(self._selectors, (key.kind, key.namespace, k, v), key.name) for k, v in selector.items()]
        if key.kind == PODS and (node := (obj.get("spec") or {}).get("nodeName")):
            entries.append((self._by_node, node, here))
        for table, index, member in entries:
            table[index].add(member)
        self._entries[key] = entries

    def _remove(self, key: Key) -> None:
        for table, index, member in self._entries.pop(key, []):
            bucket = table.get(index)
            if bucket is not None:
                bucket.discard(member)
                if not bucket:
                    del table[index]
