"""The named indexes the store keeps over workloads, services and policies.

Not thread-safe on their own: the store mutates them under its lock. Every index is kept exact on
update and removal (an updated workload may change addresses, node or services), so lookups never
see a stale entry.

Two resources may claim one address (a pod IP reused before the old pod's removal arrives, or two
ServiceEntries sharing a VIP): the address index keeps every claimant in arrival order and answers
with the newest, so removing the newer one reveals the older again.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .address import NetworkAddress
from .policy import Policy, Scope
from .service import Service
from .workload import Workload

K = TypeVar("K", bound=Hashable)


@dataclass
class MultiIndex(Generic[K]):
    """key -> the names claiming it, oldest first (dicts as ordered sets)."""

    _entries: dict[K, dict[str, None]] = field(default_factory=dict)

    def add(self, key: K, name: str) -> None:
        self._entries.setdefault(key, {})[name] = None

    def discard(self, key: K, name: str) -> None:
        names = self._entries.get(key)
        if names is not None:
            names.pop(name, None)
            if not names:
                del self._entries[key]

    def names(self, key: K) -> list[str]:
        """Every name claiming `key`, newest first."""
        return list(reversed(self._entries.get(key, {})))

    def newest(self, key: K) -> str | None:
        names = self._entries.get(key)
        return next(reversed(names)) if names else None


@dataclass
class WorkloadIndex:
    """Workloads by uid, by network address, by node, and by the services they serve."""

    by_uid: dict[str, Workload] = field(default_factory=dict)
    by_address: MultiIndex[NetworkAddress] = field(default_factory=MultiIndex)
    by_node: MultiIndex[str] = field(default_factory=MultiIndex)
    by_service: MultiIndex[str] = field(default_factory=MultiIndex)  # service key -> endpoint uids

    def insert(self, workload: Workload) -> None:
        self.remove(workload.uid)
        self.by_uid[workload.uid] = workload
        for key in _workload_addresses(workload):
            self.by_address.add(key, workload.uid)
        if workload.node:
            self.by_node.add(workload.node, workload.uid)
        for service_key in workload.services:
            self.by_service.add(service_key, workload.uid)

    def remove(self, uid: str) -> Workload | None:
        old = self.by_uid.pop(uid, None)
        if old is None:
            return None
        for key in _workload_addresses(old):
            self.by_address.discard(key, uid)
        if old.node:
            self.by_node.discard(old.node, uid)
        for service_key in old.services:
            self.by_service.discard(service_key, uid)
        return old

    def by_uids(self, uids: Iterable[str]) -> list[Workload]:
        return [self.by_uid[uid] for uid in uids if uid in self.by_uid]


def _workload_addresses(workload: Workload) -> list[NetworkAddress]:
    return [NetworkAddress(workload.network, ip) for ip in workload.addresses]


@dataclass
class ServiceIndex:
    """Services by `ns/hostname`, by VIP and by hostname (lower-cased: the name server's key)."""

    by_key: dict[str, Service] = field(default_factory=dict)
    by_vip: MultiIndex[NetworkAddress] = field(default_factory=MultiIndex)
    by_hostname: MultiIndex[str] = field(default_factory=MultiIndex)

    def insert(self, service: Service) -> None:
        self.remove(service.key)
        self.by_key[service.key] = service
        for vip in service.vips:
            self.by_vip.add(vip, service.key)
        self.by_hostname.add(service.hostname.lower(), service.key)

    def remove(self, key: str) -> Service | None:
        old = self.by_key.pop(key, None)
        if old is not None:
            for vip in old.vips:
                self.by_vip.discard(vip, key)
            self.by_hostname.discard(old.hostname.lower(), key)
        return old


GLOBAL_BUCKET = ""  # ztunnel files GLOBAL policies under the empty namespace, whatever their own


@dataclass
class PolicyIndex:
    """Policies by `ns/name`, and the keys that apply to a whole namespace (or, under "", to all)."""

    by_key: dict[str, Policy] = field(default_factory=dict)
    by_namespace: MultiIndex[str] = field(default_factory=MultiIndex)

    def insert(self, policy: Policy) -> None:
        self.remove(policy.key)
        self.by_key[policy.key] = policy
        bucket = _bucket(policy)
        if bucket is not None:
            self.by_namespace.add(bucket, policy.key)

    def remove(self, key: str) -> Policy | None:
        old = self.by_key.pop(key, None)
        if old is not None and (bucket := _bucket(old)) is not None:
            self.by_namespace.discard(bucket, key)
        return old


def _bucket(policy: Policy) -> str | None:
    """istio/ztunnel: src/state/policy.rs PolicyStore::insert: by scope, not by namespace alone."""
    if policy.scope is Scope.GLOBAL:
        return GLOBAL_BUCKET
    if policy.scope is Scope.NAMESPACE:
        return policy.namespace
    return None  # WORKLOAD_SELECTOR: applies only where a workload lists it
