"""`meshctl x describe pod|service NAME [-n NS]`: what the ambient mesh does for one pod or Service.

istioctl's `x describe` is sidecar-oriented (mesh-features-and-user-needs §C); this one answers
the ambient questions: is the pod captured, under which identity, through which waypoint, which
policies the ztunnel (L4) and the waypoint (L7) enforce for it, and its certificate as its node's
ztunnel holds it. Facts are computed by `describe_pod` / `describe_service` (pure, over a
ConfigStore); only the certificate needs the ztunnel's admin port, and its absence is a note,
not an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from services.xds.generators.envoy.lookup import hosts_named
from services.xds.generators.envoy.resources import service_host
from services.xds.generators.view import IndexedView, meta, selector_of
from services.xds.model import (
    DESTINATION_RULES,
    GRPC_ROUTES,
    HTTP_ROUTES,
    PODS,
    SERVICES,
    VIRTUAL_SERVICES,
    ConfigStore,
)

from . import bindings
from . import ztunnel_config as zc
from .kubeconfig import KubeconfigError
from .mesh_snapshot import SnapshotError, load_store

Json = dict[str, Any]
RULE = "--------------------"


class DescribeError(Exception):
    """The object to describe is missing; the message says how to find it."""


# --- facts (pure) ---------------------------------------------------------------------------------


def _policy(p: bindings.PolicyRef) -> Json:
    return {"policy": p.name, "action": p.action, "why": p.why}


def _waypoint(w: bindings.WaypointView) -> Json:
    return {"for": w.subject, "via": w.via, "waypoint": w.waypoint, "bound": w.bound, "state": w.detail}


def describe_pod(store: ConfigStore, pod: Json, ztunnel: str | None, certificate: Json) -> Json:
    """A pod's mesh facts; `ztunnel` is where its node's ztunnel admin answers (None when unknown) and
    `certificate` what `certificate_of` found (or a `skipped` note)."""
    services = bindings.services_of(store, pod)
    waypoints = bindings.pod_waypoints(store, pod)
    bound = sorted({w.waypoint for w in waypoints if w.bound and w.waypoint})
    annotations = meta(pod).get("annotations") or {}
    return {
        "pod": f"{meta(pod).get('namespace')}/{meta(pod)['name']}",
        "node": (pod.get("spec") or {}).get("nodeName"),
        "ztunnel": ztunnel,
        "podIP": (pod.get("status") or {}).get("podIP"),
        "enrolled": bindings.enrolled(pod),
        "redirection": annotations.get(bindings.REDIRECTION),
        "identity": bindings.identity_of(pod),
        "services": [f"{meta(s).get('namespace')}/{meta(s)['name']}" for s in services],
        "waypoints": [_waypoint(w) for w in waypoints],
        "l4Policies": [_policy(p) for p in bindings.l4_policies(store, pod)],
        "l7Policies": [_policy(p) for p in bindings.l7_policies(store, services, bound)],
        "peerAuthentication": bindings.peer_authentication_mode(store, pod),
        "certificate": certificate,
    }


def _attached(store: ConfigStore, kinds: tuple[str, ...], host: str) -> list[str]:
    out = []
    for kind in kinds:
        for obj in store.list(kind):
            if host in hosts_named(kind, obj):
                out.append(f"{_kind(kind)} {meta(obj).get('namespace')}/{meta(obj)['name']}")
    return sorted(out)


def _kind(kind: str) -> str:
    return {
        HTTP_ROUTES: "HTTPRoute",
        GRPC_ROUTES: "GRPCRoute",
        VIRTUAL_SERVICES: "VirtualService",
        DESTINATION_RULES: "DestinationRule",
    }[kind]


def _ready(pod: Json) -> bool:
    status = pod.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return status.get("phase") == "Running" and all(c.get("status") == "True" for c in conditions)


def describe_service(store: ConfigStore, svc: Json) -> Json:
    """A Service's mesh facts: VIP, ports, endpoints, waypoint, routes, DestinationRules, L7 policies."""
    namespace, name = meta(svc).get("namespace", ""), meta(svc)["name"]
    spec = svc.get("spec") or {}
    host = service_host(name, namespace)
    selector = selector_of(SERVICES, svc) or {}
    pods = sorted(IndexedView(store).matching(PODS, namespace, selector)) if selector else []
    endpoints = []
    for ns, pod_name in pods:
        pod = store.get(PODS, ns, pod_name) or {}
        status = pod.get("status") or {}
        ip, ready, captured = status.get("podIP"), _ready(pod), bindings.enrolled(pod)
        endpoints.append({"pod": f"{ns}/{pod_name}", "ip": ip, "ready": ready, "enrolled": captured})
    waypoint = bindings.service_binding(store, svc)
    return {
        "service": f"{namespace}/{name}",
        "host": host,
        "vip": spec.get("clusterIP"),
        "ports": [
            {k: p[k] for k in ("name", "port", "targetPort", "protocol", "appProtocol") if k in p}
            for p in spec.get("ports") or []
        ],
        "endpoints": endpoints,
        "waypoint": _waypoint(waypoint),
        "routes": _attached(store, (HTTP_ROUTES, GRPC_ROUTES, VIRTUAL_SERVICES), host),
        "destinationRules": _attached(store, (DESTINATION_RULES,), host),
        "l7Policies": [
            _policy(p) for p in bindings.l7_policies(store, [svc], [waypoint.waypoint] if waypoint.bound else [])
        ],
    }


def certificate_of(dump: Json, identity: str) -> Json:
    """The leaf certificate a ztunnel holds for `identity` (serial, expiry, state), from its config_dump."""
    bare = identity.removeprefix("spiffe://")
    for entry in dump.get("certificates") or []:
        if entry.get("identity", "").removeprefix("spiffe://") != bare:
            continue
        leaf = (entry.get("certChain") or [{}])[0]
        return {
            "state": entry.get("state"),
            "serial": leaf.get("serialNumber"),
            "notBefore": leaf.get("validFrom"),
            "notAfter": leaf.get("expirationTime"),
        }
    return {"skipped": f"the ztunnel holds no certificate for {identity} (yet)"}


# --- text -----------------------------------------------------------------------------------------


def _policy_lines(policies: list[Json]) -> list[str]:
    if not policies:
        return ["   none"]
    return [f"   {p['policy']}   {p['action']}   ({p['why']})" for p in policies]


def _waypoint_line(w: Json) -> str:
    if not w["waypoint"]:
        return f"   {w['for']}: none"
    via = f" via {w['via']}" if w["via"] else ""
    return f"   {w['for']}: {w['waypoint']}{via} ({w['state']})"


def render_pod(facts: Json) -> str:
    """The pod's facts as istioctl-describe-like text."""
    cert = facts["certificate"]
    cert_line = (
        f"   note: {cert['skipped']}"
        if "skipped" in cert
        else f"   serial {cert['serial']}, not after {cert['notAfter']} ({cert['state']})"
    )
    enrolled = f"yes ({bindings.REDIRECTION}: {facts['redirection']})" if facts["enrolled"] else "no (not captured)"
    lines = [
        f"Pod: {facts['pod']}",
        f"   Node: {facts['node'] or '(not scheduled)'}",
        f"   Ztunnel: {facts['ztunnel'] or '(unknown: no node address in the state directory)'}",
        f"   Pod IP: {facts['podIP'] or '(none yet)'}",
        f"   Enrolled: {enrolled}",
        f"   Identity: {facts['identity']}",
        f"   Services: {', '.join(facts['services']) or 'none'}",
        f"   PeerAuthentication: {facts['peerAuthentication']}",
        RULE,
        "Waypoints:",
        *[_waypoint_line(w) for w in facts["waypoints"]],
        RULE,
        "L4 AuthorizationPolicies (the pod's ztunnel):",
        *_policy_lines(facts["l4Policies"]),
        "L7 AuthorizationPolicies (its waypoint):",
        *_policy_lines(facts["l7Policies"]),
        RULE,
        "Certificate:",
        cert_line,
    ]
    return "\n".join(lines)


def render_service(facts: Json) -> str:
    """The Service's facts as istioctl-describe-like text."""
    ports = [
        f"   Port: {p.get('name', '-')} {p['port']}/{p.get('protocol', 'TCP')} "
        f"targets pod port {p.get('targetPort', p['port'])}"
        for p in facts["ports"]
    ]
    endpoints = [
        f"   {e['pod']} {e['ip'] or '(no IP)'} {'ready' if e['ready'] else 'not ready'}"
        f"{'' if e['enrolled'] else ' (not captured)'}"
        for e in facts["endpoints"]
    ]
    lines = [
        f"Service: {facts['service']} ({facts['host']})",
        f"   VIP: {facts['vip'] or 'None'}",
        *ports,
        "Endpoints:",
        *(endpoints or ["   none"]),
        RULE,
        "Waypoint:",
        _waypoint_line(facts["waypoint"]),
        "Routes:",
        *([f"   {r}" for r in facts["routes"]] or ["   none"]),
        "DestinationRules:",
        *([f"   {r}" for r in facts["destinationRules"]] or ["   none"]),
        "L7 AuthorizationPolicies (its waypoint):",
        *_policy_lines(facts["l7Policies"]),
    ]
    return "\n".join(lines)


def render(facts: Json, what: str, output: str) -> str:
    if output == "json":
        return json.dumps(facts, indent=2)
    if output == "yaml":
        return yaml.safe_dump(facts, sort_keys=False).rstrip()
    return render_pod(facts) if what == "pod" else render_service(facts)


# --- the command ----------------------------------------------------------------------------------


def _ztunnel(state_dir: Path, node: str | None) -> tuple[str | None, Json]:
    """Where the node's ztunnel admin answers and the pod's certificate source: the dump, or a note."""
    if not node:
        return None, {"skipped": "the pod is not scheduled on a node"}
    try:
        admin = zc.locate(state_dir, node)
    except zc.ZtunnelConfigError as e:
        return None, {"skipped": f"certificate not shown: {e}"}
    try:
        return str(admin), {"dump": zc.fetch(admin, timeout=3)}
    except zc.ZtunnelConfigError as e:
        return str(admin), {"skipped": f"certificate not shown: {e}"}


def describe(store: ConfigStore, what: str, namespace: str, name: str, state_dir: Path) -> Json:
    """Look the object up and compute its facts (DescribeError when it does not exist)."""
    kind = PODS if what == "pod" else SERVICES
    obj = store.get(kind, namespace, name)
    if obj is None:
        raise DescribeError(
            f'{what} "{name}" not found in namespace {namespace}; list them with: kubectl get {kind} -n {namespace}'
        )
    if what != "pod":
        return describe_service(store, obj)
    admin, source = _ztunnel(state_dir, (obj.get("spec") or {}).get("nodeName"))
    certificate = certificate_of(source["dump"], bindings.identity_of(obj)) if "dump" in source else source
    return describe_pod(store, obj, admin, certificate)


def run(args: argparse.Namespace, make_client: Callable[[argparse.Namespace], httpx.Client], state_dir: Path) -> int:
    """`meshctl x describe`: errors are one line on stderr and exit 1."""
    what = "pod" if args.kind in ("pod", "pods", "po") else "service"
    try:
        with make_client(args) as client:
            store = load_store(client)
        facts = describe(store, what, args.namespace, args.name, state_dir)
    except (SnapshotError, KubeconfigError, DescribeError, OSError) as e:
        print(f"meshctl: {e}", file=sys.stderr)
        return 1
    print(render(facts, what, args.output))
    return 0


def add_parser(xsub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """`meshctl x describe pod|service NAME` under the `x` subparsers."""
    p = xsub.add_parser("describe", help="what the ambient mesh does for a pod or a service")
    p.add_argument("kind", choices=["pod", "pods", "po", "service", "services", "svc"])
    p.add_argument("name")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    p.add_argument("--state-dir", help="istiod's (or the cluster's) state directory (env MESH_STATE_DIR)")
    p.add_argument("--kubeconfig", help="use this kubeconfig instead of the state directory")
    p.set_defaults(func=func)
