"""What each proxy sees. A node's ztunnel gets every Address (any workload may be a destination)
but only the Authorization policies it enforces: mesh-wide ones (the root namespace) and those of
the namespaces that have a workload on its node, since ztunnel applies policy on the receiving
side (DESIGN §6). A waypoint's resources (`waypoint/{N}/{G}`, `inbound-vip|…`) are seen only by
a workload whose certificate names the waypoint's namespace and service account
(docs/waypoint.md); to anyone else they do not exist. So are an ingress gateway's (`gateway/{N}/{G}`,
`gateway|…`, and the SDS Secrets `kubernetes://…` its listeners reference: docs/ingress.md), by the
Gateway's service account in its namespace."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable

from mesh.identity import Identity, IdentityError

from .generators.envoy.resources import is_restricted_name
from .model import PODS, ROOT_NAMESPACE, Change, ConfigStore
from .peers import Peer
from .protocol import all_visible
from .types import AUTHORIZATION, ENVOY_TYPES

log = logging.getLogger("mesh-xds.visibility")

Filter = Callable[[str], bool]
Visibility = Callable[[Peer, str], Filter]
Readers = Callable[[tuple[str, str]], frozenset[tuple[str, str]]]  # (type URL, name) -> (ns, sa) allowed
_LOGGED_MAX = 10_000


def _placement(pod: dict | None) -> tuple[str, str] | None:
    if pod is None:
        return None
    node = (pod.get("spec") or {}).get("nodeName")
    return (node, pod["metadata"].get("namespace", "")) if node else None


class NodeScope:
    """(node, namespace) pairs that have pods, kept in step with the configuration."""

    def __init__(self, root_namespace: str = ROOT_NAMESPACE):
        self.root = root_namespace
        self._pairs: Counter[tuple[str, str]] = Counter()

    def rebuild(self, store: ConfigStore) -> set[str]:
        """Recount from the store; returns the nodes whose set of namespaces changed."""
        before = self._namespaces_by_node()
        self._pairs = Counter(p for p in (_placement(pod) for pod in store.list(PODS)) if p)
        after = self._namespaces_by_node()
        return {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}

    def apply(self, changes: Iterable[Change]) -> set[str]:
        """Fold pod changes in; returns the nodes that gained or lost a namespace."""
        touched: set[str] = set()
        for change in changes:
            if change.key.kind != PODS:
                continue
            old, new = _placement(change.old), _placement(change.new)
            if old == new:
                continue
            if old is not None:
                self._pairs[old] -= 1
                if self._pairs[old] <= 0:
                    del self._pairs[old]
                    touched.add(old[0])
            if new is not None:
                self._pairs[new] += 1
                if self._pairs[new] == 1:
                    touched.add(new[0])
        return touched

    def namespaces_on(self, node: str) -> set[str]:
        return {ns for (n, ns) in self._pairs if n == node}

    def _namespaces_by_node(self) -> dict[str, frozenset[str]]:
        out: dict[str, set[str]] = {}
        for node, ns in self._pairs:
            out.setdefault(node, set()).add(ns)
        return {k: frozenset(v) for k, v in out.items()}

    def visibility(self, peer: Peer, type_url: str) -> Callable[[str], bool]:
        """The filter for one stream and type."""
        if type_url != AUTHORIZATION or peer.kind != "ztunnel":
            return all_visible
        namespaces = self.namespaces_on(peer.node) | {self.root}
        return lambda name: name.split("/", 1)[0] in namespaces


def _reader(peer: Peer) -> tuple[str, str] | None:
    """(namespace, service account) of a workload peer's certificate identity."""
    if peer.kind != "workload" or not peer.identity:
        return None
    try:
        identity = Identity.parse(peer.identity)
    except IdentityError:
        return None
    return identity.namespace, identity.service_account


class WaypointAccess:
    """The peer check for waypoint resources: a stream reads a waypoint's Listener, routes,
    clusters and endpoints only when its certificate is the waypoint Gateway's service account in
    the Gateway's namespace; anyone else is answered as if they did not exist (and logged once).
    The same check covers an ingress gateway's resources and the SDS Secrets its listeners name."""

    def __init__(self, readers: Readers):
        self.readers = readers
        self._logged: set[tuple[str, str]] = set()

    def visibility(self, peer: Peer, type_url: str) -> Filter:
        if type_url not in ENVOY_TYPES:
            return all_visible
        reader = _reader(peer)

        def visible(name: str) -> bool:
            if not is_restricted_name(name):
                return True
            if reader is not None and reader in self.readers((type_url, name)):
                return True
            self._refused(peer, name)
            return False

        return visible

    def _refused(self, peer: Peer, name: str) -> None:
        key = (peer.identity or peer.node, name)
        if key in self._logged:
            return
        if len(self._logged) >= _LOGGED_MAX:
            self._logged.clear()
        self._logged.add(key)
        log.warning(
            "waypoint resource refused: the peer is not the waypoint's service account",
            extra={"peer": peer.describe(), "resource": name},
        )


def combine(*filters: Visibility) -> Visibility:
    """A visibility that shows a name only when every one of `filters` does."""

    def visibility(peer: Peer, type_url: str) -> Filter:
        made = (make(peer, type_url) for make in filters)
        each = [f for f in made if f is not all_visible]
        if not each:
            return all_visible  # kept recognisable: such a stream may be sent a table whole
        if len(each) == 1:
            return each[0]
        return lambda name: all(f(name) for f in each)

    return visibility
