"""Which waypoint and which policies apply to a pod or a Service: pure reads of a ConfigStore.

The rules are mesh-xds's own (services/xds/generators): waypoint binding is `workload_waypoint` /
`service_waypoint`, selector policies are `selected_policy_names`, PeerAuthentication-derived
policies are `effective_policy_names`. This module only adds the views the diagnostic commands
print: who enforces what (mesh-features-and-user-needs §D: selector or none → the destination
ztunnel; targetRefs → the waypoint) and the Gateway's Programmed state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh.identity import DEFAULT_TRUST_DOMAIN
from services.xds.generators.authorization import has_authorization, policy_selector, selected_policy_names, target_refs
from services.xds.generators.peer_authentication import STATIC_STRICT_NAME, effective_policy_names
from services.xds.generators.view import IndexedView, labels_of, meta
from services.xds.generators.waypoints import (
    USE_WAYPOINT,
    WAYPOINT_CLASS,
    WaypointBinding,
    service_waypoint,
    workload_waypoint,
)
from services.xds.model import AUTHORIZATION_POLICIES, GATEWAYS, NAMESPACES, ROOT_NAMESPACE, SERVICES, ConfigStore

Json = dict[str, Any]

REDIRECTION = "ambient.istio.io/redirection"
WAYPOINT_SERVICE_ACCOUNT = "gateway.istio.io/service-account"
DEFAULT_WAYPOINT_SA = "waypoint"


@dataclass(frozen=True)
class PolicyRef:
    """A policy that applies, its action, and why it applies (its scope or its target)."""

    name: str  # ns/name
    action: str
    why: str


@dataclass(frozen=True)
class WaypointView:
    """How one object binds to a waypoint: what asked (`via`), the Gateway, and whether it took."""

    subject: str  # "workload traffic" or "Service ns/name"
    via: str  # "pod label", "namespace label", "service label", or "" when none was asked for
    waypoint: str | None  # ns/name
    bound: bool
    detail: str  # the WaypointBound reason/message, or the Gateway's Programmed state


def identity_of(pod: Json, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
    """The pod's SPIFFE identity: its service account in its namespace."""
    sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    return f"spiffe://{trust_domain}/ns/{meta(pod).get('namespace', '')}/sa/{sa}"


def enrolled(pod: Json) -> bool:
    """Whether the node agent captured the pod (it sets `ambient.istio.io/redirection: enabled`)."""
    return (meta(pod).get("annotations") or {}).get(REDIRECTION) == "enabled"


def programmed(store: ConfigStore, ref: tuple[str, str]) -> str:
    """`Programmed=True`, `Programmed=False (Reason)`, or what is wrong with the Gateway."""
    gateway = store.get(GATEWAYS, *ref)
    if gateway is None:
        return "Gateway not found"
    if (gateway.get("spec") or {}).get("gatewayClassName") != WAYPOINT_CLASS:
        return f"not a waypoint (class {(gateway.get('spec') or {}).get('gatewayClassName')})"
    for cond in (gateway.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Programmed":
            reason = f" ({cond.get('reason')})" if cond.get("status") != "True" and cond.get("reason") else ""
            return f"Programmed={cond.get('status')}{reason}"
    return "Programmed=Unknown (no status yet)"


def _via(store: ConfigStore, obj: Json, own: str) -> str:
    if USE_WAYPOINT in labels_of(obj):
        return own
    ns = store.get(NAMESPACES, "", meta(obj).get("namespace", ""))
    return "namespace label" if ns and USE_WAYPOINT in labels_of(ns) else ""


def _view(store: ConfigStore, subject: str, via: str, binding: WaypointBinding) -> WaypointView:
    ref = binding.waypoint
    name = f"{ref[0]}/{ref[1]}" if ref else None
    if ref is None:
        return WaypointView(subject, via, None, False, "")
    if binding.bound:
        return WaypointView(subject, via, name, True, programmed(store, ref))
    return WaypointView(subject, via, name, False, f"not bound: {binding.reason}: {binding.message}".rstrip(": "))


def services_of(store: ConfigStore, pod: Json) -> list[Json]:
    """The Services of the pod's namespace whose selector matches its labels."""
    return IndexedView(store).selecting(SERVICES, meta(pod).get("namespace", ""), labels_of(pod))


def pod_waypoints(store: ConfigStore, pod: Json) -> list[WaypointView]:
    """The pod's own (workload) waypoint, then each selecting Service's waypoint."""
    view = IndexedView(store)
    views = [_view(store, "workload traffic", _via(store, pod, "pod label"), workload_waypoint(view, pod))]
    for svc in services_of(store, pod):
        views.append(service_binding(store, svc))
    return views


def service_binding(store: ConfigStore, svc: Json) -> WaypointView:
    """A Service's waypoint (object label over namespace label)."""
    subject = f"Service {meta(svc).get('namespace', '')}/{meta(svc)['name']}"
    return _view(store, subject, _via(store, svc, "service label"), service_waypoint(IndexedView(store), svc))


def waypoint_identity(store: ConfigStore, ref: tuple[str, str], trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
    """The identity a waypoint's pods present: the Gateway's service account (default `waypoint`)."""
    gateway = store.get(GATEWAYS, *ref) or {}
    sa = (meta(gateway).get("annotations") or {}).get(WAYPOINT_SERVICE_ACCOUNT) or DEFAULT_WAYPOINT_SA
    return f"spiffe://{trust_domain}/ns/{ref[0]}/sa/{sa}"


def _action(ap: Json) -> str:
    return (ap.get("spec") or {}).get("action") or "ALLOW"


def l4_policies(store: ConfigStore, pod: Json, root: str = ROOT_NAMESPACE) -> list[PolicyRef]:
    """The AuthorizationPolicies the pod's ztunnel enforces for it: namespace-wide and mesh-wide
    ones (no selector, no targetRefs) and the selector policies that select it."""
    view = IndexedView(store)
    namespace, labels = meta(pod).get("namespace", ""), labels_of(pod)
    out = []
    for ns, why in ((namespace, "namespace-wide"), (root, "mesh-wide (root namespace)")):
        for ap in view.list(AUTHORIZATION_POLICIES, ns):
            if policy_selector(ap) is None and has_authorization(ap):
                out.append(PolicyRef(f"{ns}/{meta(ap)['name']}", _action(ap), why))
        if ns == root:
            break
    for name in selected_policy_names(view, namespace, labels, root):
        ap = store.get(AUTHORIZATION_POLICIES, *name.split("/", 1)) or {}
        out.append(PolicyRef(name, _action(ap), "selects the pod"))
    return list(dict.fromkeys(out))


def l7_policies(
    store: ConfigStore, services: list[Json], waypoints: list[str], root: str = ROOT_NAMESPACE
) -> list[PolicyRef]:
    """The AuthorizationPolicies a waypoint enforces for these Services: targetRefs naming one of
    the Services, one of the waypoint Gateways (`ns/name`), or, from the root namespace, the
    GatewayClass istio-waypoint."""
    svc_keys = {(meta(s).get("namespace", ""), meta(s)["name"]) for s in services}
    gw_keys = {tuple(w.split("/", 1)) for w in waypoints}
    out = []
    for ap in store.list(AUTHORIZATION_POLICIES):
        namespace = meta(ap).get("namespace", "")
        for ref in target_refs(ap.get("spec") or {}):
            key = (ref.get("namespace") or namespace, ref.get("name", ""))
            kind = ref.get("kind")
            hit = (
                (kind == "Service" and key in svc_keys)
                or (kind == "Gateway" and key in gw_keys)
                or (kind == "GatewayClass" and namespace == root and key[1] == WAYPOINT_CLASS and gw_keys)
            )
            if hit:
                out.append(PolicyRef(f"{namespace}/{meta(ap)['name']}", _action(ap), f"targets {kind} {key[1]}"))
                break
    return sorted(out, key=lambda p: p.name)


def peer_authentication_mode(store: ConfigStore, pod: Json, root: str = ROOT_NAMESPACE) -> str:
    """The pod's effective mTLS mode as its ztunnel enforces it (STRICT refuses plaintext)."""
    names = effective_policy_names(IndexedView(store), meta(pod).get("namespace", ""), labels_of(pod), root)
    if not names:
        return "PERMISSIVE"
    if names == [f"{root}/{STATIC_STRICT_NAME}"]:
        return "STRICT"
    return f"per port ({names[0]})"
