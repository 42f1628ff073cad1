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

Waypoints are sources too: a Gateway of class istio-waypoint yields its Listener
`waypoint/{N}/{G}` and the `inbound-vip|…` resources of the Services and ServiceEntries bound to it
(waypoint_listeners.py). Which objects bind where is kept in an index (the Gateway their
`istio.io/use-waypoint` labels name, whether or not it is ready), refreshed when a Service,
ServiceEntry or Namespace changes; a waypoint is re-translated when its Gateway changes, when an
object binds to it or leaves it, when a host it read changes (routes, DestinationRules, the pods
of its Services), when a policy naming it or one of its Services changes, and when a JWKS it
inlines was fetched again (`jwks_changed`). Each waypoint name remembers the identities allowed to
read it (`readers`: the Gateway's namespace and service account), for the hub's visibility filter.

Ingress gateways (class istio) are sources too (gateway_listeners.py, docs/ingress.md): a Gateway
yields `gateway/{N}/{G}`, its `gateway|…` routes, its clusters and the SDS Secrets its TLS
listeners name, readable by the Gateway's service account only. It is re-translated for the
changes `affected_ingress_gateways` names (the ingress job's trigger rules: its routes, backends,
Secrets, ReferenceGrants, Namespaces), when a host or policy it read changes, and when the data
of a Secret it asked for was fetched again (`secrets_changed`).

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

from services.xds.gateway_jobs import affected_ingress_gateways
from services.xds.generators.authorization import target_refs
from services.xds.generators.index import Delta
from services.xds.generators.view import IndexedView, labels_of, meta
from services.xds.generators.waypoints import GATEWAY_NAME, WAYPOINT_CLASS, service_waypoint
from services.xds.model import (
    AUTHORIZATION_POLICIES,
    GATEWAYS,
    NAMESPACES,
    PODS,
    REQUEST_AUTHENTICATIONS,
    ROOT_NAMESPACE,
    SERVICE_ENTRIES,
    SERVICES,
    Change,
    ConfigStore,
    Key,
)
from services.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

from .gateway_clusters import GATEWAY_READ, IngressLookup
from .gateway_listeners import gateway_translation, ingress_service_account, is_ingress
from .listeners import target_resources
from .lookup import INDEXED_KINDS, HostIndex, Lookup, hosts_named
from .resources import ENVOY_TYPE_URLS, is_restricted_name, resource_name, service_host, type_url
from .sds import SecretResolver, no_secrets
from .targets import entry_hosts, service_entry_targets, service_target
from .waypoint_jwt import JwksResolver, jwks_condition
from .waypoint_listeners import Bound, bound_targets, is_waypoint, service_account, waypoint_translation
from .waypoint_workloads import named_gateways

Name = tuple[str, str]  # (type URL, resource name)
SOURCE_KINDS = (SERVICES, SERVICE_ENTRIES)
POLICY_KINDS = (AUTHORIZATION_POLICIES, REQUEST_AUTHENTICATIONS)
Reader = tuple[str, str]  # (namespace, service account) allowed to read a waypoint's resources
JWKS_READ = "jwks:"  # prefix of the dependency key of a jwksUri
SECRET_READ = "secret:"  # prefix of the dependency key of a Secret's data, `secret:{ns}/{name}`


def _no_jwks(_uri: str) -> str | None:
    return None


@dataclass(frozen=True)
class EnvoyDeltas:
    """One translation step: a Delta per Envoy type URL."""

    listeners: Delta
    routes: Delta
    clusters: Delta
    endpoints: Delta
    access_changed: dict[str, set[str]] = field(default_factory=dict)  # type URL -> names whose readers changed
    conditions_changed: set[Key] = field(default_factory=set)  # RequestAuthentications
    secrets: Delta = field(default_factory=Delta)  # SDS, for ingress gateways

    def by_type_url(self) -> dict[str, Delta]:
        """The deltas keyed by type URL."""
        return {
            LISTENER: self.listeners,
            ROUTE: self.routes,
            CLUSTER: self.clusters,
            ENDPOINT: self.endpoints,
            SECRET: self.secrets,
        }

    @property
    def empty(self) -> bool:
        """True when nothing changed."""
        return all(d.empty for d in self.by_type_url().values()) and not self.access_changed


@dataclass
class _Output:
    """What one source yields and the hosts it looked up."""

    resources: dict[Name, Message] = field(default_factory=dict)
    reads: set[str] = field(default_factory=set)
    rank: tuple[Any, ...] = ()  # lower wins a name two sources yield
    reader: Reader | None = None  # a waypoint's: who may read what it yields
    problems: dict[Key, list[str]] = field(default_factory=dict)  # RequestAuthentication -> unusable keys


class EnvoyTranslator:
    """Stored configuration → Envoy resources for proxyless gRPC clients, incrementally."""

    def __init__(
        self, root_namespace: str = ROOT_NAMESPACE, jwks: JwksResolver = _no_jwks, secrets: SecretResolver = no_secrets
    ) -> None:
        self.root_namespace = root_namespace
        self.jwks = jwks
        self.secrets = secrets
        self._binds: dict[Key, tuple[str, str]] = {}  # Service/ServiceEntry -> the waypoint its labels name
        self._bound: dict[tuple[str, str], set[Key]] = defaultdict(set)
        self._readers: dict[Name, frozenset[Reader]] = {}
        self.conditions: dict[Key, list[dict[str, str]]] = {}
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

    def readers(self, name: Name) -> frozenset[Reader]:
        """(namespace, service account) pairs allowed to read a waypoint resource (empty: nobody)."""
        return self._readers.get(name, frozenset())

    # --- translation ---------------------------------------------------------------------------

    def rebuild(self, store: ConfigStore) -> EnvoyDeltas:
        """Translate everything from `store`; return the difference from what was held."""
        self._view, self._index = IndexedView(store), HostIndex(store)
        touched = set(self._bytes)
        self._outputs.clear()
        self._owners.clear()
        self._dependents.clear()
        self._binds.clear()
        self._bound.clear()
        for kind in SOURCE_KINDS:
            for obj in store.list(kind):
                self._rebind(Key(kind, meta(obj).get("namespace", ""), meta(obj)["name"]))
        for kind in (*SOURCE_KINDS, GATEWAYS):
            for obj in store.list(kind):
                touched |= self._replace(Key(kind, meta(obj).get("namespace", ""), meta(obj)["name"]))
        problems = set(self.conditions) | {k for out in self._outputs.values() for k in out.problems}
        return self._finish(touched, problems)

    def update(self, store: ConfigStore, changes: Iterable[Change]) -> EnvoyDeltas:
        """Fold in changes the store has already applied; translate only the sources they affect."""
        if self._view is None or self._index is None or self._view.store is not store:
            return self.rebuild(store)
        changes = list(changes)
        for change in changes:
            self._view.refresh(change.key)
            self._index.refresh(change.key)
        dirty = {Key(GATEWAYS, *ref) for ref in affected_ingress_gateways(store, changes)}
        dirty |= self._through_waypoints(changes)
        for change in changes:
            dirty |= self._affected(change)
        return self._retranslate(dirty)

    def secrets_read(self) -> set[tuple[str, str]]:
        """(namespace, name) of every Secret an ingress gateway's translation asked for."""
        return {
            (ns, name)
            for read in self._dependents
            if read.startswith(SECRET_READ)
            for ns, _, name in [read[len(SECRET_READ) :].partition("/")]
        }

    def secrets_changed(self, store: ConfigStore, keys: Iterable[tuple[str, str]]) -> EnvoyDeltas:
        """Re-translate the ingress gateways that asked for one of these Secrets (its data changed)."""
        if self._view is None or self._view.store is not store:
            return self.rebuild(store)
        reads = {f"{SECRET_READ}{namespace}/{name}" for namespace, name in keys}
        return self._retranslate({k for read in reads for k in self._dependents.get(read, set())})

    def jwks_changed(self, store: ConfigStore, uris: Iterable[str]) -> EnvoyDeltas:
        """Re-translate the waypoints that inline one of these jwksUris (their document changed)."""
        if self._view is None or self._view.store is not store:
            return self.rebuild(store)
        return self._retranslate({k for uri in uris for k in self._dependents.get(JWKS_READ + uri, set())})

    def _retranslate(self, dirty: set[Key]) -> EnvoyDeltas:
        touched: set[Name] = set()
        problems: set[Key] = set()
        for key in sorted(dirty, key=lambda k: (k.kind, k.namespace, k.name)):
            before = self._outputs.get(key)
            problems |= set(before.problems) if before else set()
            touched |= self._replace(key)
            after = self._outputs.get(key)
            problems |= set(after.problems) if after else set()
        return self._finish(touched, problems)

    def _affected(self, change: Change) -> set[Key]:
        """The sources to translate again after `change` (the view and index already reflect it)."""
        kind, namespace = change.key.kind, change.key.namespace
        objects = [obj for obj in (change.old, change.new) if obj is not None]
        if kind == PODS:
            # A pod is only ever read as an endpoint of the sources selecting it (before or after),
            # by the waypoints that read those sources' hosts, and by its waypoint for workload traffic.
            selecting = {key for obj in objects for key in self._selecting(namespace, labels_of(obj))}
            assert self._view is not None
            named = {Key(GATEWAYS, *ref) for ref in named_gateways(PODS, objects, self._view)}
            return selecting | self._waypoints_reading(selecting) | named
        dirty = {change.key} if kind in (*SOURCE_KINDS, GATEWAYS) else set()
        if kind in SOURCE_KINDS:
            dirty |= self._rebind(change.key)
        elif kind == NAMESPACES:  # its labels may bind or unbind every Service of the namespace
            for source_kind in SOURCE_KINDS:
                for obj in self._view.list(source_kind, change.key.name) if self._view else ():
                    dirty |= self._rebind(Key(source_kind, change.key.name, meta(obj)["name"]))
            if self._view is not None:  # ...and every pod's workload waypoint
                dirty |= {Key(GATEWAYS, *ref) for ref in named_gateways(NAMESPACES, objects, self._view)}
        elif kind in POLICY_KINDS:
            dirty |= self._policy_targets(namespace, objects)
        if kind in INDEXED_KINDS or kind == SERVICES:
            for host in {host for obj in objects for host in hosts_named(kind, obj)}:
                dirty |= self._dependents.get(host, set())
        return dirty

    def _through_waypoints(self, changes: list[Change]) -> set[Key]:
        """The ingress gateways sending to a Service through a waypoint whose Gateway or pods (by
        their gateway-name label) changed."""
        names: set[str] = set()
        for change in changes:
            if change.key.kind == GATEWAYS:
                names.add(f"{GATEWAY_READ}{change.key.namespace}/{change.key.name}")
            elif change.key.kind == PODS:
                for obj in (change.old, change.new):
                    waypoint = labels_of(obj).get(GATEWAY_NAME) if obj is not None else None
                    if waypoint:
                        names.add(f"{GATEWAY_READ}{change.key.namespace}/{waypoint}")
        return {key for name in names for key in self._dependents.get(name, ())}

    def _rebind(self, key: Key) -> set[Key]:
        """Refresh which waypoint a Service or ServiceEntry names; return the waypoints (as Gateway
        keys) it left or joined."""
        assert self._view is not None
        obj = self._view.get(key.kind, key.namespace, key.name)
        old = self._binds.pop(key, None)
        new = service_waypoint(self._view, obj).waypoint if obj is not None else None
        if old is not None:
            self._bound[old].discard(key)
            if not self._bound[old]:
                del self._bound[old]
        if new is not None:
            self._binds[key] = new
            self._bound[new].add(key)
        return {Key(GATEWAYS, *ref) for ref in {old, new} if ref is not None and old != new}

    def _waypoints_reading(self, sources: set[Key]) -> set[Key]:
        """The waypoints that read the hosts of these Services and ServiceEntries."""
        assert self._view is not None
        out: set[Key] = set()
        for key in sources:
            obj = self._view.get(key.kind, key.namespace, key.name)
            if key.kind == SERVICES:
                hosts = [service_host(key.name, key.namespace)]
            else:
                hosts = entry_hosts(obj) if obj is not None else []
            for host in hosts:
                out |= {k for k in self._dependents.get(host, ()) if k.kind == GATEWAYS}
        return out

    def _policy_targets(self, namespace: str, objects: list[dict]) -> set[Key]:
        """The waypoints a targetRefs policy (before or after a change) applies to."""
        out: set[Key] = set()
        for obj in objects:
            for ref in target_refs(obj.get("spec") or {}):
                kind, name = ref.get("kind"), ref.get("name") or ""
                if kind == "Gateway":
                    out.add(Key(GATEWAYS, namespace, name))
                elif kind == "GatewayClass" and name == WAYPOINT_CLASS:
                    out |= {k for k in self._outputs if k.kind == GATEWAYS}
                elif kind == "Service":
                    out |= {k for k in self._dependents.get(service_host(name, namespace), ()) if k.kind == GATEWAYS}
                elif kind == "ServiceEntry":
                    out |= self._waypoints_reading({Key(SERVICE_ENTRIES, namespace, name)})
        return out

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
        if key.kind == GATEWAYS:
            if is_ingress(obj):
                return self._translate_ingress(key, obj)
            return self._translate_waypoint(key, obj) if is_waypoint(obj) else None
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

    def _translate_waypoint(self, key: Key, gateway: dict) -> _Output:
        """A waypoint's Listener and the resources of the objects bound to it."""
        assert self._view is not None and self._index is not None
        lookup = Lookup(self._view, self._index, self.root_namespace, waypoint=True)
        bound: list[Bound] = []
        for source in sorted(
            self._bound.get((key.namespace, key.name), ()), key=lambda k: (k.kind, k.namespace, k.name)
        ):
            obj = self._view.get(source.kind, source.namespace, source.name)
            if obj is not None and service_waypoint(self._view, obj).bound:
                bound.append(bound_targets(lookup, source, obj))
        translation = waypoint_translation(lookup, gateway, bound, self.jwks)
        out = _Output(
            rank=(True, meta(gateway).get("creationTimestamp") or "", key.kind, key.namespace, key.name),
            reader=(key.namespace, service_account(gateway)),
            problems=translation.problems,
        )
        for message in translation.resources:
            out.resources[(type_url(message), resource_name(message))] = message
        out.reads = lookup.reads | {JWKS_READ + uri for uri in translation.uris}
        return out

    def _translate_ingress(self, key: Key, gateway: dict) -> _Output:
        """An ingress gateway's Listener, routes, clusters and SDS Secrets."""
        assert self._view is not None and self._index is not None
        lookup = IngressLookup(self._view, self._index, self.root_namespace)
        translation = gateway_translation(lookup, gateway, self.jwks, self.secrets)
        out = _Output(
            rank=(True, meta(gateway).get("creationTimestamp") or "", key.kind, key.namespace, key.name),
            reader=(key.namespace, ingress_service_account(gateway)),
            problems=translation.problems,
        )
        for message in translation.resources:
            out.resources[(type_url(message), resource_name(message))] = message
        out.reads = (
            lookup.reads
            | {JWKS_READ + uri for uri in translation.uris}
            | {f"{SECRET_READ}{ns}/{name}" for ns, name in translation.secrets}
        )
        return out

    def _finish(self, touched: set[Name], problems: set[Key] | None = None) -> EnvoyDeltas:
        """Pick each touched name's winner, compare bytes, and build the deltas."""
        deltas = {t: Delta() for t in ENVOY_TYPE_URLS}
        access: dict[str, set[str]] = {}
        for name in touched:
            if is_restricted_name(name[1]):
                readers = frozenset(r for k in self._owners.get(name, ()) if (r := self._outputs[k].reader) is not None)
                if readers != self._readers.get(name, frozenset()):
                    access.setdefault(name[0], set()).add(name[1])
                if readers:
                    self._readers[name] = readers
                else:
                    self._readers.pop(name, None)
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
        return EnvoyDeltas(
            deltas[LISTENER],
            deltas[ROUTE],
            deltas[CLUSTER],
            deltas[ENDPOINT],
            access,
            self._conditions(problems or set()),
            secrets=deltas[SECRET],
        )

    def _conditions(self, keys: set[Key]) -> set[Key]:
        """Recompute the conditions of these RequestAuthentications; return those that changed."""
        changed: set[Key] = set()
        for key in keys:
            found: list[str] = []
            for output in self._outputs.values():
                found += [p for p in output.problems.get(key, ()) if p not in found]
            wanted = [jwks_condition(found)] if found else []
            if wanted != self.conditions.get(key, []):
                changed.add(key)
            if wanted:
                self.conditions[key] = wanted
            else:
                self.conditions.pop(key, None)
        return changed
