"""The Translator: the current ztunnel resources, kept in step with the store change by change.

`rebuild(store)` translates everything; `update(store, changes)` translates again only the sources
the changes affect (dependencies.py) and reports, per type URL, the resources whose serialized
bytes changed and the ones that disappeared. Both return the difference from what the Translator
held before, so a rebuild after a resync pushes only what really differs.

Each source object's output (its resources, conditions and the objects it looked up by name:
waypoint Gateways, a policy's targets) is kept, so a source is replaced as a whole. Two sources may
yield the same resource name (a Service and a ServiceEntry host in one namespace, `ns/hostname`):
the Kubernetes Service wins, then the oldest (as Istio's selectWorkloadServices), and removing the
winner brings the other one back.

Mutation contract: one task owns a Translator and calls `rebuild`/`update` after the store has
applied the changes; the mappings it exposes are read-only views that stay valid until the next
call. Messages handed out are never modified afterwards (a change builds new ones).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from google.protobuf.message import Message

from services.xds.model import (
    AUTHORIZATION_POLICIES,
    GATEWAYS,
    PEER_AUTHENTICATIONS,
    PODS,
    ROOT_NAMESPACE,
    SERVICE_ENTRIES,
    SERVICES,
    WORKLOAD_ENTRIES,
    Change,
    ConfigStore,
    Key,
)

from . import dependencies
from .authorization import authorization_policy
from .peer_authentication import STATIC_STRICT_NAME, peer_authentication, static_strict_policy
from .resources import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, address_keys, resource_name
from .services import service_entry_services, service_resource
from .view import IndexedView, meta
from .waypoint_policy import waypoint_policy_status
from .waypoints import WaypointBinding
from .workloads import pod_workload, service_entry_workloads, workload_entry_workload

Json = dict[str, Any]
Name = tuple[str, str]  # (type URL, resource name)

# The static STRICT policy has no object of its own: it exists while any PeerAuthentication does.
STATIC_STRICT_KEY = Key("mesh-xds/static", ROOT_NAMESPACE, STATIC_STRICT_NAME)


@dataclass(frozen=True)
class Delta:
    """What changed for one type URL: new or changed resources by name, and removed names."""

    updated: dict[str, Message] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        """True when nothing changed."""
        return not self.updated and not self.removed


@dataclass(frozen=True)
class Deltas:
    """One translation step: Address and Authorization deltas, and the objects whose status
    conditions changed (their current conditions are in `Translator.conditions`, absent = none)."""

    addresses: Delta
    authorizations: Delta
    conditions_changed: frozenset[Key] = frozenset()

    def by_type_url(self) -> dict[str, Delta]:
        """The deltas keyed by type URL."""
        return {ADDRESS_TYPE_URL: self.addresses, AUTHORIZATION_TYPE_URL: self.authorizations}

    @property
    def empty(self) -> bool:
        """True when no resource and no condition changed."""
        return self.addresses.empty and self.authorizations.empty and not self.conditions_changed


@dataclass
class _Output:
    """Everything one source yields."""

    resources: dict[Name, Message] = field(default_factory=dict)
    conditions: list[dict[str, str]] = field(default_factory=list)
    reads: set[Key] = field(default_factory=set)  # objects looked up: a change to one retranslates this
    rank: tuple[Any, ...] = ()  # lower wins a name two sources yield

    def add_binding(self, binding: WaypointBinding, report: bool = True) -> None:
        """Record the waypoint looked up (a dependency) and, if `report`, its WaypointBound condition."""
        if binding.waypoint is not None:
            self.reads.add(Key(GATEWAYS, *binding.waypoint))
        if report and (cond := binding.condition()) is not None and cond not in self.conditions:
            self.conditions.append(cond)


class Translator:
    """Stored configuration → ztunnel Address and Authorization resources, incrementally."""

    def __init__(self) -> None:
        # The mesh root namespace is the model's (istio-system), as every generator reads it.
        self.root_namespace = ROOT_NAMESPACE
        self._view: IndexedView | None = None
        self._outputs: dict[Key, _Output] = {}
        self._owners: dict[Name, set[Key]] = defaultdict(set)
        self._dependents: dict[Key, set[Key]] = defaultdict(set)  # looked-up object -> sources
        self._current: dict[str, dict[str, Message]] = {ADDRESS_TYPE_URL: {}, AUTHORIZATION_TYPE_URL: {}}
        self._bytes: dict[Name, bytes] = {}
        self._aliases: dict[str, set[str]] = defaultdict(set)
        self._conditions: dict[Key, list[dict[str, str]]] = {}

    # --- what the push side reads --------------------------------------------------------------

    @property
    def addresses(self) -> Mapping[str, Message]:
        """Workloads (by uid) and Services (by `ns/hostname`)."""
        return MappingProxyType(self._current[ADDRESS_TYPE_URL])

    @property
    def authorizations(self) -> Mapping[str, Message]:
        """Authorizations by `ns/name`."""
        return MappingProxyType(self._current[AUTHORIZATION_TYPE_URL])

    def resources(self, type_url: str) -> Mapping[str, Message]:
        """The current resources of one type URL."""
        return MappingProxyType(self._current[type_url])

    @property
    def conditions(self) -> Mapping[Key, list[dict[str, str]]]:
        """Status conditions per object: ZtunnelAccepted on policies for ztunnel, WaypointAccepted on
        policies with targetRefs, istio.io/WaypointBound on Services, ServiceEntries, Pods and
        WorkloadEntries that ask for a waypoint."""
        return MappingProxyType(self._conditions)

    def lookup(self, key: str) -> set[str]:
        """Address resource names answering an on-demand key (`network/ip` or `ns/hostname`)."""
        return set(self._aliases.get(key, ()))

    # --- translation ---------------------------------------------------------------------------

    def rebuild(self, store: ConfigStore) -> Deltas:
        """Translate everything from `store`; return the difference from what was held."""
        self._view = IndexedView(store)
        touched = set(self._bytes)
        old_conditions = dict(self._conditions)
        self._outputs.clear()
        self._owners.clear()
        self._dependents.clear()
        self._conditions.clear()
        for key in self._all_sources(store):
            touched |= self._replace(key)
        keys = old_conditions.keys() | self._conditions.keys()
        changed = {k for k in keys if old_conditions.get(k) != self._conditions.get(k)}
        return self._finish(touched, changed)

    def update(self, store: ConfigStore, changes: Iterable[Change]) -> Deltas:
        """Fold in changes the store has already applied; translate only what they affect."""
        if self._view is None or self._view.store is not store:
            return self.rebuild(store)
        changes = list(changes)
        for change in changes:
            self._view.refresh(change.key)
        dirty: set[Key] = set()
        for change in changes:
            dirty |= dependencies.affected(self._view, change, self._dependents, self.root_namespace)
            if change.key.kind == PEER_AUTHENTICATIONS:
                dirty.add(STATIC_STRICT_KEY)
        touched: set[Name] = set()
        changed: set[Key] = set()
        for key in sorted(dirty, key=lambda k: (k.kind, k.namespace, k.name)):
            before = self._conditions.get(key)
            touched |= self._replace(key)
            if self._conditions.get(key) != before:
                changed.add(key)
        return self._finish(touched, changed)

    def _all_sources(self, store: ConfigStore) -> list[Key]:
        keys = [STATIC_STRICT_KEY]
        for kind in dependencies.SOURCE_KINDS:
            keys += [Key(kind, meta(o).get("namespace", ""), meta(o)["name"]) for o in store.list(kind)]
        return keys

    def _replace(self, key: Key) -> set[Name]:
        """Translate one source again; return the names its old and new outputs touch."""
        old = self._outputs.pop(key, None)
        if old is not None:
            for name in old.resources:
                self._owners[name].discard(key)
            for ref in old.reads:
                self._dependents[ref].discard(key)
                if not self._dependents[ref]:
                    del self._dependents[ref]
        new = self._translate(key)
        self._conditions.pop(key, None)
        if new is not None:
            self._outputs[key] = new
            for name in new.resources:
                self._owners[name].add(key)
            for ref in new.reads:
                self._dependents[ref].add(key)
            if new.conditions:
                self._conditions[key] = new.conditions
        return set(old.resources if old else ()) | set(new.resources if new else ())

    def _translate(self, key: Key) -> _Output | None:
        assert self._view is not None
        view, out = self._view, _Output()
        if key == STATIC_STRICT_KEY:
            if view.store.count(PEER_AUTHENTICATIONS):
                policy = static_strict_policy(self.root_namespace)
                out.resources[(AUTHORIZATION_TYPE_URL, resource_name(policy))] = policy
            return out
        obj = view.get(key.kind, key.namespace, key.name)
        if obj is None:
            return None
        out.rank = (key.kind != SERVICES, meta(obj).get("creationTimestamp") or "", key.kind, key.name)
        if key.kind in (PODS, WORKLOAD_ENTRIES):
            result = (pod_workload if key.kind == PODS else workload_entry_workload)(view, obj)
            if result is not None:
                out.resources[(ADDRESS_TYPE_URL, result.workload.uid)] = result.workload
                out.add_binding(result.binding)
        elif key.kind == SERVICES:
            if (svc := service_resource(view, obj)) is not None:
                out.resources[(ADDRESS_TYPE_URL, resource_name(svc.service))] = svc.service
                out.add_binding(svc.binding)
        elif key.kind == SERVICE_ENTRIES:
            self._translate_service_entry(obj, out)
        elif key.kind == AUTHORIZATION_POLICIES:
            self._add_policy(out, authorization_policy(obj, self.root_namespace))
            if (waypoint_status := waypoint_policy_status(view, obj, self.root_namespace)) is not None:
                out.conditions.append(waypoint_status.condition)
                out.reads |= waypoint_status.reads
        elif key.kind == PEER_AUTHENTICATIONS:
            self._add_policy(out, peer_authentication(view, obj, self.root_namespace))
        return out

    def _translate_service_entry(self, se: Json, out: _Output) -> None:
        assert self._view is not None
        for svc in service_entry_services(self._view, se):
            out.resources[(ADDRESS_TYPE_URL, resource_name(svc.service))] = svc.service
            out.add_binding(svc.binding)
        for workload in service_entry_workloads(self._view, se):
            out.resources[(ADDRESS_TYPE_URL, workload.workload.uid)] = workload.workload
            out.add_binding(workload.binding, report=False)  # WaypointBound reports the service binding

    @staticmethod
    def _add_policy(out: _Output, translation: Any) -> None:
        if translation.authorization is not None:
            out.resources[(AUTHORIZATION_TYPE_URL, resource_name(translation.authorization))] = (
                translation.authorization
            )
        out.conditions.extend(translation.conditions)

    def _finish(self, touched: set[Name], conditions_changed: set[Key]) -> Deltas:
        """Pick each touched name's winner, compare bytes, and build the deltas."""
        deltas: dict[str, Delta] = {ADDRESS_TYPE_URL: Delta(), AUTHORIZATION_TYPE_URL: Delta()}
        for name in touched:
            type_url, resource = name
            owners = self._owners.get(name)
            message = None
            if owners:
                winner = min(owners, key=lambda k: self._outputs[k].rank)
                message = self._outputs[winner].resources[name]
            else:
                self._owners.pop(name, None)
            previous = self._current[type_url].get(resource)
            if message is None:
                if previous is not None:
                    deltas[type_url].removed.add(resource)
                    self._set(name, None, previous)
                continue
            encoded = message.SerializeToString(deterministic=True)
            if encoded != self._bytes.get(name):
                deltas[type_url].updated[resource] = message
                self._set(name, message, previous, encoded)
            elif message is not previous:
                self._current[type_url][resource] = message  # same bytes: keep the newest object
        return Deltas(deltas[ADDRESS_TYPE_URL], deltas[AUTHORIZATION_TYPE_URL], frozenset(conditions_changed))

    def _set(self, name: Name, message: Message | None, previous: Message | None, encoded: bytes = b"") -> None:
        type_url, resource = name
        if type_url == ADDRESS_TYPE_URL and previous is not None:
            for alias in address_keys(previous):
                self._aliases[alias].discard(resource)
                if not self._aliases[alias]:
                    del self._aliases[alias]
        if message is None:
            del self._current[type_url][resource]
            del self._bytes[name]
            return
        self._current[type_url][resource] = message
        self._bytes[name] = encoded
        if type_url == ADDRESS_TYPE_URL:
            for alias in address_keys(message):
                self._aliases[alias].add(resource)
