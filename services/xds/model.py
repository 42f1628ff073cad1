"""The configuration mesh-xds translates: every watched object, kept current from the change stream.

`ConfigStore` is owned by the source task and mutated only between generations; generators read
it through the `ConfigView` methods and never keep references across generations. Each object is
the JSON dict istiod serves. Keys are `(kind key, namespace, name)`; kind keys are istiod's
(`pods`, `security.istio.io/authorizationpolicies`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

PODS = "pods"
SERVICES = "services"
NAMESPACES = "namespaces"
NODES = "nodes"
SERVICE_ENTRIES = "networking.istio.io/serviceentries"
WORKLOAD_ENTRIES = "networking.istio.io/workloadentries"
VIRTUAL_SERVICES = "networking.istio.io/virtualservices"
DESTINATION_RULES = "networking.istio.io/destinationrules"
AUTHORIZATION_POLICIES = "security.istio.io/authorizationpolicies"
PEER_AUTHENTICATIONS = "security.istio.io/peerauthentications"
REQUEST_AUTHENTICATIONS = "security.istio.io/requestauthentications"
GATEWAYS = "gateway.networking.k8s.io/gateways"
HTTP_ROUTES = "gateway.networking.k8s.io/httproutes"
GRPC_ROUTES = "gateway.networking.k8s.io/grpcroutes"
REFERENCE_GRANTS = "gateway.networking.k8s.io/referencegrants"
SECRETS = "secrets"

WATCHED: tuple[str, ...] = (
    NAMESPACES,
    NODES,
    PODS,
    SERVICES,
    SERVICE_ENTRIES,
    WORKLOAD_ENTRIES,
    VIRTUAL_SERVICES,
    DESTINATION_RULES,
    AUTHORIZATION_POLICIES,
    PEER_AUTHENTICATIONS,
    REQUEST_AUTHENTICATIONS,
    GATEWAYS,
    HTTP_ROUTES,
    GRPC_ROUTES,
    REFERENCE_GRANTS,
)
# Followed from the change stream but never listed: mesh-xds reads istiod with the reader token,
# which may not read Secrets, and the stream carries a Secret only as a reference (no data), which
# is all the ingress reconcile trigger needs (docs/ingress.md).
STREAM_ONLY: tuple[str, ...] = (SECRETS,)

ROOT_NAMESPACE = "istio-system"  # Istio's mesh root namespace: policies here apply mesh-wide


@dataclass(frozen=True, slots=True)
class Key:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Change:
    """One object changed: its version before (None: new) and after (None: deleted)."""

    key: Key
    old: Json | None
    new: Json | None


@dataclass
class ConfigStore:
    """Current objects by kind, namespace and name, plus the revision they reflect."""

    revision: int = 0
    _objects: dict[str, dict[tuple[str, str], Json]] = field(default_factory=dict)
    _applied: dict[Key, int] = field(default_factory=dict)  # per key: newest revision applied (tombstones too)
    _floor: dict[str, int] = field(default_factory=dict)  # per kind: the revision of its last full list

    # --- reading (the ConfigView generators use) ---------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> Json | None:
        return self._objects.get(kind, {}).get((namespace, name))

    def list(self, kind: str, namespace: str | None = None) -> Iterator[Json]:
        objects = self._objects.get(kind, {})
        if namespace is None:
            yield from objects.values()
        else:
            yield from (o for (ns, _), o in objects.items() if ns == namespace)

    def count(self, kind: str) -> int:
        return len(self._objects.get(kind, {}))

    # --- writing (the source task only) ------------------------------------------------------

    def apply(self, kind: str, obj: Json, revision: int, deleted: bool = False) -> Change | None:
        """Fold one object version in; older than what is known (a replayed event) changes nothing."""
        meta = obj.get("metadata") or {}
        key = Key(kind, meta.get("namespace", ""), meta["name"])
        if self._applied.get(key, -1) >= revision or self._floor.get(kind, -1) >= revision:
            return None
        self._applied[key] = revision
        self.revision = max(self.revision, revision)
        objects = self._objects.setdefault(kind, {})
        old = objects.get((key.namespace, key.name))
        if deleted:
            if old is None:
                return None
            del objects[(key.namespace, key.name)]
            return Change(key, old, None)
        objects[(key.namespace, key.name)] = obj
        return Change(key, old, obj)

    def replace_kind(self, kind: str, items: Iterable[Json], revision: int) -> list[Change]:
        """A fresh list of a kind (start-up or resync): report what differs from what was held."""
        fresh = {((o.get("metadata") or {}).get("namespace", ""), o["metadata"]["name"]): o for o in items}
        held = self._objects.get(kind, {})
        changes = []
        for (ns, name), old in held.items():
            if (ns, name) not in fresh:
                changes.append(Change(Key(kind, ns, name), old, None))
        for (ns, name), new in fresh.items():
            old = held.get((ns, name))
            if old is None or old.get("metadata", {}).get("resourceVersion") != new["metadata"].get("resourceVersion"):
                changes.append(Change(Key(kind, ns, name), old, new))
        self._objects[kind] = fresh
        self._floor[kind] = max(self._floor.get(kind, -1), revision)  # the list reflects everything up to it
        self.revision = max(self.revision, revision)
        return changes
