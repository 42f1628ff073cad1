"""Configuration by host: which routes, VirtualServices, DestinationRules and ServiceEntries name a
host, and a recording reader so the translator knows which hosts each output depends on.

Every read a target's translation makes is "what is configured for host H" (its own routes,
VirtualServices and DestinationRule; the ports, DestinationRule and existence of the hosts its
routes send to). `Lookup` records those hosts; the translator re-translates a target when an
object naming one of them changes. HTTPRoutes and GRPCRoutes name the hosts of their Service
parentRefs (`group: ""`, `kind: Service`), VirtualServices their `hosts`, DestinationRules their
`host`, short names resolved in the object's namespace (Istio's ResolveShortnameToFQDN).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from services.xds.generators.view import IndexedView, meta
from services.xds.model import (
    DESTINATION_RULES,
    GRPC_ROUTES,
    HTTP_ROUTES,
    SERVICE_ENTRIES,
    SERVICES,
    VIRTUAL_SERVICES,
    ConfigStore,
    Key,
)

from .resources import cluster_name, inbound_cluster_name, resolve_host, service_host
from .targets import host_owner

Json = dict[str, Any]

ROUTE_KINDS = (HTTP_ROUTES, GRPC_ROUTES)
INDEXED_KINDS = (HTTP_ROUTES, GRPC_ROUTES, VIRTUAL_SERVICES, DESTINATION_RULES, SERVICE_ENTRIES)


def service_parents(route: Json) -> list[Json]:
    """A route's parentRefs that name a Service (group "" and kind Service; Gateway API defaults
    an absent group to gateway.networking.k8s.io, so it must be written out)."""
    refs = (route.get("spec") or {}).get("parentRefs") or []
    return [r for r in refs if r.get("group") == "" and r.get("kind") == "Service" and r.get("name")]


def hosts_named(kind: str, obj: Json) -> set[str]:
    """The hosts an object configures (for routes: their Service parents' hosts)."""
    namespace = meta(obj).get("namespace", "")
    spec = obj.get("spec") or {}
    if kind in ROUTE_KINDS:
        return {service_host(r["name"], r.get("namespace") or namespace) for r in service_parents(obj)}
    if kind == VIRTUAL_SERVICES:
        return {resolve_host(h, namespace) for h in spec.get("hosts") or []}
    if kind == DESTINATION_RULES:
        return {resolve_host(spec["host"], namespace)} if spec.get("host") else set()
    if kind == SERVICE_ENTRIES:
        return set(spec.get("hosts") or [])
    if kind == SERVICES:
        return {service_host(meta(obj)["name"], namespace)}
    return set()


def _age(obj: Json) -> tuple[str, str, str]:
    # Istio's (and Gateway API's) tie-break between objects: oldest first, then namespace/name.
    m = meta(obj)
    return (m.get("creationTimestamp") or "", m.get("namespace", ""), m["name"])


class HostIndex:
    """(kind, host) → the objects of that kind naming the host, for the INDEXED_KINDS."""

    def __init__(self, store: ConfigStore):
        self.store = store
        self._by_host: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        self._hosts: dict[Key, set[str]] = {}
        for kind in INDEXED_KINDS:
            for obj in store.list(kind):
                self.refresh(Key(kind, meta(obj).get("namespace", ""), meta(obj)["name"]))

    def refresh(self, key: Key) -> None:
        """Re-index one key from the store's current object (dropping it when gone)."""
        if key.kind not in INDEXED_KINDS:
            return
        here = (key.namespace, key.name)
        for host in self._hosts.pop(key, set()):
            bucket = self._by_host[(key.kind, host)]
            bucket.discard(here)
            if not bucket:
                del self._by_host[(key.kind, host)]
        obj = self.store.get(key.kind, key.namespace, key.name)
        if obj is not None:
            hosts = hosts_named(key.kind, obj)
            self._hosts[key] = hosts
            for host in hosts:
                self._by_host[(key.kind, host)].add(here)

    def objects(self, kind: str, host: str) -> list[Json]:
        """The objects of `kind` naming `host`, oldest first."""
        found = [self.store.get(kind, ns, name) for ns, name in self._by_host.get((kind, host), ())]
        return sorted((o for o in found if o is not None), key=_age)


@dataclass
class Lookup:
    """Reads for one target's translation, recording every host looked up."""

    view: IndexedView
    index: HostIndex
    root_namespace: str
    reads: set[str] = field(default_factory=set)
    # For a waypoint (an Envoy-like HTTP proxy) rather than a proxyless gRPC client: routes use
    # HTTP forms (statuses, 5xx retries, methods, query parameters, mirrors, direct responses) and
    # name `inbound-vip|…` clusters (docs/waypoint.md).
    waypoint: bool = False

    def cluster(self, host: str, port: int, subset: str = "") -> str:
        """The name of a host port's (subset's) cluster, in this translation's naming."""
        return inbound_cluster_name(host, port, subset) if self.waypoint else cluster_name(host, port, subset)

    def backend_allowed(self, route_kind: str, route_namespace: str, namespace: str, name: str) -> bool:
        """Whether a route (`HTTPRoute`, `GRPCRoute`) may send to Service `name` of another
        namespace: never for the mesh's routes (a configuration shared by every client cannot
        hold a ReferenceGrant's decision); an ingress gateway's lookup checks ReferenceGrants."""
        return namespace == route_namespace

    def named(self, kind: str, host: str) -> list[Json]:
        """Objects of `kind` configuring `host`, oldest first."""
        self.reads.add(host)
        return self.index.objects(kind, host)

    def ports(self, host: str) -> tuple[int, ...]:
        """The ports `host` has clusters for (empty when nothing serves it)."""
        self.reads.add(host)
        owner = host_owner(self.view, host, self.index.objects(SERVICE_ENTRIES, host))
        return tuple(p.number for p in owner[1]) if owner else ()

    def destination_rule(self, host: str) -> Json | None:
        """The DestinationRule for `host`: the oldest in the namespace of the host's Service (or
        ServiceEntry), else in the root namespace, else anywhere. One rule per host, whoever
        asks, so routes and clusters agree on its subsets (Istio picks by the client's namespace
        first, which a configuration shared by all clients cannot). Rules with a
        workloadSelector apply to chosen clients only and are skipped."""
        owner = host_owner(self.view, host, self.index.objects(SERVICE_ENTRIES, host))
        namespace = owner[0] if owner else self.root_namespace
        rules = [r for r in self.named(DESTINATION_RULES, host) if not (r.get("spec") or {}).get("workloadSelector")]
        rules.sort(
            key=lambda r: (meta(r).get("namespace") != namespace, meta(r).get("namespace") != self.root_namespace)
        )
        return rules[0] if rules else None
