"""What each proxy sees. A node's ztunnel gets every Address (any workload may be a destination)
but only the Authorization policies it enforces: mesh-wide ones (the root namespace) and those of
the namespaces that have a workload on its node, since ztunnel applies policy on the receiving
side (DESIGN §6)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from .model import PODS, ROOT_NAMESPACE, Change, ConfigStore
from .peers import Peer
from .types import AUTHORIZATION


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
            return lambda _name: True
        namespaces = self.namespaces_on(peer.node) | {self.root}
        return lambda name: name.split("/", 1)[0] in namespaces
