"""The EnvoyTranslator: Listener / RouteConfiguration / Cluster / ClusterLoadAssignment for proxyless
gRPC clients, kept in step with the store change by change.

Same contract as the ztunnel `Translator` (generators/index.py): `rebuild(store)` translates
everything, `update(store, changes)` only the targets the changes affect, and both return per
type URL the resources whose serialized bytes changed and the names that disappeared.

A source is a Service or a ServiceEntry (its targets). Each source's output remembers the hosts
its translation looked up (lookup.py); a change re-translates the sources that looked up a host
the changed object names (before or after the change), plus a created Service or ServiceEntry
itself; a pod change re-translates the Services and ServiceEntries selecting it (it is read as
their endpoint only, so routes naming their hosts stay as they are). Two sources may
yield the same resource name (a Service and a ServiceEntry for one host): the Service wins, then
the oldest (as in the ztunnel translator), and removing the winner brings the other back.

Mutation contract: one task owns an EnvoyTranslator and calls `rebuild`/`update` after the store
has applied the changes; messages handed out are never modified afterwards.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from google.protobuf.message import Message

from services.xds.generators.index import Delta
from services.xds.generators.view import IndexedView, labels_of, meta
from services.xds.model import PODS, ROOT_NAMESPACE, SERVICE_ENTRIES, SERVICES, Change, ConfigStore, Key
from services.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

from .listeners import target_resources
from .lookup import INDEXED_KINDS, HostIndex, Lookup, hosts_named
from .resources import ENVOY_TYPE_URLS, resource_name, service_host, type_url
from .targets import service_entry_targets, service_target

Name = tuple[str, str]  # (type URL, resource name)
SOURCE_KINDS = (SERVICES, SERVICE_ENTRIES)


@dataclass(frozen=True)
class EnvoyDeltas:
    """One translation step: a Delta per Envoy type URL."""

    listeners: Delta
    routes: Delta
    clusters: Delta
    endpoints: Delta

    def by_type_url(self) -> dict[str, Delta]:
        """The deltas keyed by type URL."""
        return {LISTENER: self.listeners, ROUTE: self.routes, CLUSTER: self.clusters, ENDPOINT: self.endpoints}

    @property
    def empty(self) -> bool:
        """True when nothing changed."""
        return all(d.empty for d in self.by_type_url().values())


@dataclass
class _Output:
    """What one source yields and the hosts it looked up."""

    resources: dict[Name, Message] = field(default_factory=dict)
    reads: set[str] = field(default_factory=set)
    rank: tuple[Any, ...] = ()  # lower wins a name two sources yield


class EnvoyTranslator:
    """Stored configuration → Envoy resources for proxyless gRPC clients, incrementally."""

    def __init__(self, root_namespace: str = ROOT_NAMESPACE) -> None:
        self.root_namespace = root_namespace
        self._view: IndexedView | None = None
        self._index: HostIndex | None = None
        self._outputs: dict[Key, _Output] = {}
        self._owners: dict[Name, set[Key]] = defaultdict(set)
        self._dependents: dict[str, set[Key]] = defaultdict(set)  # host -> sources that looked it up
        self._current: dict[str, dict[str, Message]] = {t: {} for t in ENVOY_TYPE_URLS}
        self._bytes: dict[Name, bytes] = {}

    def resources(self, type_url: str) -> Mapping[str, Message]:
        """The current resources of one type URL (read-only)."""
        return MappingProxyType(self._current[type_url])

    # --- translation ---------------------------------------------------------------------------

    def rebuild(self, store: ConfigStore) -> EnvoyDeltas:
        """Translate everything from `store`; return the difference from what was held."""
        self._view, self._index = IndexedView(store), HostIndex(store)
        touched = set(self._bytes)
        self._outputs.clear()
        self._owners.clear()
        self._dependents.clear()
        for kind in SOURCE_KINDS:
            for obj in store.list(kind):
                touched |= self._replace(Key(kind, meta(obj).get("namespace", ""), meta(obj)["name"]))
        return self._finish(touched)

    def update(self, store: ConfigStore, changes: Iterable[Change]) -> EnvoyDeltas:
        """Fold in changes the store has already applied; translate only the sources they affect."""
        if self._view is None or self._index is None or self._view.store is not store:
            return self.rebuild(store)
        changes = list(changes)
        for change in changes:
            self._view.refresh(change.key)
            self._index.refresh(change.key)
        dirty: set[Key] = set()
        for change in changes:
            dirty |= self._affected(change)
        touched: set[Name] = set()
        for key in sorted(dirty, key=lambda k: (k.kind, k.namespace, k.name)):
            touched |= self._replace(key)
        return self._finish(touched)

    def _affected(self, change: Change) -> set[Key]:
        """The sources to translate again after `change` (the view and index already reflect it)."""
        kind, namespace = change.key.kind, change.key.namespace
        objects = [obj for obj in (change.old, change.new) if obj is not None]
        if kind == PODS:
            # A pod is only ever read as an endpoint of the sources selecting it (before or after).
            return {key for obj in objects for key in self._selecting(namespace, labels_of(obj))}
        dirty = {change.key} if kind in SOURCE_KINDS else set()
        if kind in INDEXED_KINDS or kind == SERVICES:
            for host in {host for obj in objects for host in hosts_named(kind, obj)}:
                dirty |= self._dependents.get(host, set())
        return dirty

    def _selecting(self, namespace: str, labels: dict[str, str]) -> set[Key]:
        """The Services and ServiceEntries of `namespace` whose selector matches `labels`."""
        assert self._view is not None
        return {
            Key(kind, namespace, meta(obj)["name"])
            for kind in SOURCE_KINDS
            for obj in self._view.selecting(kind, namespace, labels)
        }

    def _replace(self, key: Key) -> set[Name]:
        """Translate one source again; return the names its old and new outputs touch."""
        old = self._outputs.pop(key, None)
        if old is not None:
            for name in old.resources:
                self._owners[name].discard(key)
            for host in old.reads:
                self._dependents[host].discard(key)
                if not self._dependents[host]:
                    del self._dependents[host]
        new = self._translate(key)
        if new is not None:
            self._outputs[key] = new
            for name in new.resources:
                self._owners[name].add(key)
            for host in new.reads:
                self._dependents[host].add(key)
        return set(old.resources if old else ()) | set(new.resources if new else ())

    def _translate(self, key: Key) -> _Output | None:
        assert self._view is not None and self._index is not None
        obj = self._view.get(key.kind, key.namespace, key.name)
        if obj is None:
            return None
        lookup = Lookup(self._view, self._index, self.root_namespace)
        if key.kind == SERVICES:
            target = service_target(self._view, obj)
            targets = [target] if target is not None else []
            lookup.reads.add(service_host(key.name, key.namespace))  # its own host, even without a target
        else:
            targets = service_entry_targets(self._view, obj)
            lookup.reads |= set((obj.get("spec") or {}).get("hosts") or [])
        out = _Output(
            rank=(key.kind != SERVICES, meta(obj).get("creationTimestamp") or "", key.kind, key.namespace, key.name)
        )
        for target in targets:
            lookup.reads.add(target.host)
            for message in target_resources(lookup, target):
                out.resources[(type_url(message), resource_name(message))] = message
        out.reads = lookup.reads
        return out

    def _finish(self, touched: set[Name]) -> EnvoyDeltas:
        """Pick each touched name's winner, compare bytes, and build the deltas."""
        deltas = {t: Delta() for t in ENVOY_TYPE_URLS}
        for name in touched:
            url, resource = name
            owners = self._owners.get(name)
            message = None
            if owners:
                winner = min(owners, key=lambda k: self._outputs[k].rank)
                message = self._outputs[winner].resources[name]
            else:
                self._owners.pop(name, None)
            if message is None:
                if resource in self._current[url]:
                    deltas[url].removed.add(resource)
                    del self._current[url][resource]
                    del self._bytes[name]
                continue
            encoded = message.SerializeToString(deterministic=True)
            if encoded != self._bytes.get(name):
                deltas[url].updated[resource] = message
                self._bytes[name] = encoded
            self._current[url][resource] = message
        return EnvoyDeltas(deltas[LISTENER], deltas[ROUTE], deltas[CLUSTER], deltas[ENDPOINT])
