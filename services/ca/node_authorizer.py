"""The node rule (DESIGN §5): node N may get a certificate for identity X only if a pod scheduled
on N, neither Failed nor Succeeded, runs as X's service account in X's namespace.

Waypoint pods are pods: a waypoint placed on N runs as its Gateway's service account, so the same
rule admits exactly the waypoint identities of N. The decision reads an index fed by a pod watch
(O(1)); a miss asks istiod before refusing, so a pod created a moment ago is not refused while
its watch event is still on the way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mesh.identity import Identity

Json = dict[str, Any]
Grant = tuple[str, str, str]  # (namespace, service account, node)
TERMINAL_PHASES = ("Failed", "Succeeded")


def grant_of(pod: Json) -> Grant | None:
    """What a pod lets its node ask for, or None (not scheduled, or finished)."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    if not node or (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
        return None
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    return (pod["metadata"].get("namespace", ""), sa, node)


@dataclass
class PlacementIndex:
    """Which pods back each (namespace, service account, node) grant."""

    _pods: dict[Grant, set[tuple[str, str]]] = field(default_factory=dict)
    _by_pod: dict[tuple[str, str], Grant] = field(default_factory=dict)

    def update(self, pod: Json) -> None:
        """Record the pod's current version (replacing what its previous version granted)."""
        key = (pod["metadata"].get("namespace", ""), pod["metadata"]["name"])
        self.remove(key)
        grant = grant_of(pod)
        if grant is not None:
            self._pods.setdefault(grant, set()).add(key)
            self._by_pod[key] = grant

    def remove(self, key: tuple[str, str]) -> None:
        grant = self._by_pod.pop(key, None)
        if grant is not None:
            pods = self._pods[grant]
            pods.discard(key)
            if not pods:
                del self._pods[grant]

    def allows(self, node: str, identity: Identity) -> bool:
        return (identity.namespace, identity.service_account, node) in self._pods

    def clear(self) -> None:
        self._pods.clear()
        self._by_pod.clear()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


PodLister = Callable[[str], Awaitable[list[Json]]]  # pods on a node, straight from istiod


class NodeAuthorizer:
    """Decides the node rule from the index, re-checking istiod on a miss."""

    def __init__(self, index: PlacementIndex, list_pods_on_node: PodLister):
        self.index = index
        self._list_pods_on_node = list_pods_on_node

    def on_pod_event(self, event: str, pod: Json, _prev: Json | None) -> None:
        """Informer handler: keep the index in step with istiod."""
        if event == "DELETED":
            self.index.remove((pod["metadata"].get("namespace", ""), pod["metadata"]["name"]))
        else:
            self.index.update(pod)

    async def authorize(self, node: str, identity: Identity) -> Decision:
        if self.index.allows(node, identity):
            return Decision(True, "a pod of this service account runs on the node")
        for pod in await self._list_pods_on_node(node):
            if grant_of(pod) == (identity.namespace, identity.service_account, node):
                self.index.update(pod)
                return Decision(True, "a pod of this service account runs on the node (re-checked with istiod)")
        return Decision(False, f"no running pod of {identity.namespace}/{identity.service_account} on node {node}")
