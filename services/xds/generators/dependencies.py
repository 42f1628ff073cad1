"""Which translated objects a change affects: the reverse of what each generator reads.

A "source" is a stored object that yields resources (Pod, WorkloadEntry, Service, ServiceEntry,
AuthorizationPolicy, PeerAuthentication). `affected(view, change, dependents)` names the sources
to translate again after `change`; the index then keeps only the resources whose bytes changed.
`dependents` maps each object a source looked up by name (the waypoint Gateway it resolved, bound
or pending; a policy's targetRefs and what their binding read) to those sources, and is recorded
whether or not the object existed, so that its creation is seen too. Each rule mirrors a read in
the generators:

- Pod, WorkloadEntry → itself.
- Service, ServiceEntry → itself, and the pods and WorkloadEntries its old or new selector
  matches (their `services` maps), when its selector, ports, hosts or type changed; and the
  targetRefs policies that target it, when it appears, disappears or its labels change (its
  waypoint binding reads only its labels).
- Namespace → every source in it (waypoint binding reads its labels), and the targetRefs policies
  whose targets it binds, when its labels changed.
- Gateway → whatever looked it up: what resolved it as a waypoint, bound or pending, and the
  targetRefs policies that target it or target a Service bound to it.
- AuthorizationPolicy → itself, and the workloads its old or new selector matches (their
  `authorization_policies`; in every namespace for a root-namespace policy), when the selector or
  whether it yields an Authorization changed.
- PeerAuthentication → itself and the workloads it selects; a namespace-wide one, every workload
  and selector PeerAuthentication of its namespace (of the mesh, from the root namespace), since
  they inherit its mode.
- Node → its pods (locality), when its labels changed.

A workload's "sources" include the ServiceEntries whose labels a policy matches: their inline
endpoints are selected by the ServiceEntry's labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.xds.model import (
    AUTHORIZATION_POLICIES,
    GATEWAYS,
    NAMESPACES,
    NODES,
    PEER_AUTHENTICATIONS,
    PODS,
    ROOT_NAMESPACE,
    SERVICE_ENTRIES,
    SERVICES,
    WORKLOAD_ENTRIES,
    Change,
    Key,
)

from .authorization import has_authorization, policy_selector
from .peer_authentication import workload_level
from .view import IndexedView, labels_of, meta, selector_of

Json = dict[str, Any]

SOURCE_KINDS = (PODS, WORKLOAD_ENTRIES, SERVICES, SERVICE_ENTRIES, AUTHORIZATION_POLICIES, PEER_AUTHENTICATIONS)
WORKLOAD_KINDS = (PODS, WORKLOAD_ENTRIES)


def affected(
    view: IndexedView,
    change: Change,
    dependents: Mapping[Key, set[Key]],
    root_namespace: str = ROOT_NAMESPACE,
) -> set[Key]:
    """The sources to translate again after `change` (the view already reflects it)."""
    kind, ns = change.key.kind, change.key.namespace
    old, new = change.old, change.new
    if kind in (PODS, WORKLOAD_ENTRIES):
        return {change.key}
    if kind in (SERVICES, SERVICE_ENTRIES):
        return {change.key} | _selected_by_service(view, kind, ns, old, new) | _readers(change, dependents)
    if kind == NAMESPACES:
        if old is not None and new is not None and labels_of(old) == labels_of(new):
            return set()
        return namespace_sources(view, change.key.name) | _readers(change, dependents)
    if kind == GATEWAYS:
        return _readers(change, dependents)
    if kind == AUTHORIZATION_POLICIES:
        return {change.key} | _selected_by_policy(view, ns, old, new, root_namespace)
    if kind == PEER_AUTHENTICATIONS:
        return {change.key} | _peer_authentication(view, ns, old, new, root_namespace)
    if kind == NODES:
        if old is not None and new is not None and labels_of(old) == labels_of(new):
            return set()
        return {Key(PODS, pod_ns, pod) for pod_ns, pod in view.pods_on_node(change.key.name)}
    return set()


def _readers(change: Change, dependents: Mapping[Key, set[Key]]) -> set[Key]:
    """The sources that looked the changed object up, when what they read of it changed: all of a
    Gateway (class, status, listeners, labels); the labels of a Service, ServiceEntry or
    Namespace, or whether it exists."""
    readers = dependents.get(change.key)
    if not readers:
        return set()
    old, new = change.old, change.new
    if change.key.kind != GATEWAYS and old is not None and new is not None and labels_of(old) == labels_of(new):
        return set()
    return set(readers)


def namespace_sources(view: IndexedView, namespace: str) -> set[Key]:
    """Every source in a namespace."""
    return {Key(kind, namespace, name) for kind in SOURCE_KINDS for name in view.names(kind, namespace)}


def workload_sources(view: IndexedView, namespace: str | None, selector: Mapping[str, str] | None) -> set[Key]:
    """Pods and WorkloadEntries a selector matches, plus the ServiceEntries whose labels it matches
    (their endpoints are selected by the ServiceEntry's labels). None selects nothing."""
    if selector is None:
        return set()
    return {
        Key(kind, ns, name)
        for kind in (*WORKLOAD_KINDS, SERVICE_ENTRIES)
        for ns, name in view.matching(kind, namespace, selector)
    }


def _service_projection(kind: str, obj: Json | None) -> Any:
    """What of a Service or ServiceEntry its selected workloads read."""
    if obj is None:
        return None
    spec = obj.get("spec") or {}
    return (selector_of(kind, obj), spec.get("ports"), spec.get("hosts"))


def _selected_by_service(view: IndexedView, kind: str, ns: str, old: Json | None, new: Json | None) -> set[Key]:
    if _service_projection(kind, old) == _service_projection(kind, new):
        return set()
    keys: set[Key] = set()
    for obj in (old, new):
        selector = selector_of(kind, obj) if obj is not None else None
        if selector:
            keys |= {Key(k, ns, name) for k in WORKLOAD_KINDS for _, name in view.matching(k, ns, selector)}
    return keys


def _selected_by_policy(view: IndexedView, ns: str, old: Json | None, new: Json | None, root: str) -> set[Key]:
    before = (policy_selector(old), has_authorization(old))
    after = (policy_selector(new), has_authorization(new))
    if before == after:
        return set()
    scope = None if ns == root else ns  # root-namespace selector policies select in every namespace
    return workload_sources(view, scope, before[0]) | workload_sources(view, scope, after[0])


def _pa_projection(pa: Json | None) -> Any:
    if pa is None:
        return None
    spec = pa.get("spec") or {}
    return (spec.get("selector"), spec.get("mtls"), spec.get("portLevelMtls"), meta(pa).get("creationTimestamp"))


def _peer_authentication(view: IndexedView, ns: str, old: Json | None, new: Json | None, root: str) -> set[Key]:
    if _pa_projection(old) == _pa_projection(new):
        return set()
    keys: set[Key] = set()
    for pa in (old, new):
        if pa is None:
            continue
        if workload_level(pa):
            if ns != root:  # Istio ignores selector PeerAuthentications in the root namespace
                keys |= workload_sources(view, ns, pa["spec"]["selector"]["matchLabels"])
            continue
        # Namespace- or mesh-wide: every workload below it, and the selector policies it is the parent of.
        spaces = [ns] if ns != root else sorted({*view.namespaces(PODS), *_policy_namespaces(view)})
        for space in spaces:
            keys |= workload_sources(view, space, {})
            keys |= {Key(PEER_AUTHENTICATIONS, space, name) for name in view.names(PEER_AUTHENTICATIONS, space)}
    return keys


def _policy_namespaces(view: IndexedView) -> set[str]:
    return view.namespaces(WORKLOAD_ENTRIES) | view.namespaces(SERVICE_ENTRIES) | view.namespaces(PEER_AUTHENTICATIONS)
