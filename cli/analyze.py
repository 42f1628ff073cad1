"""`meshctl analyze [-n NS | -A]`: configuration problems, one line each, as `istioctl analyze`.

Two sources of findings (docs/meshctl.md, Diagnostics):
- the status conditions mesh-xds and mesh-worker wrote on objects, read as Istio's analyzer
  IST0171 NegativeConditionStatus reads them (istio.io: reference/config/analysis/ist0171):
  a condition of a watched type with status False, and `WaypointAccepted` True with reason
  `PartiallyInvalid`. This mesh also reports `ZtunnelAccepted` True with reason
  `UnsupportedValue` (the policy lost its HTTP rules at ztunnel, so it is stricter or looser
  than written), which Istio's analyzer does not;
- analyzers computed from the objects themselves (pure functions over a ConfigStore): a missing
  waypoint, policy target or route parent (Istio's IST0101 ReferencedResourceNotFound, an Error)
  and two ambient-specific checks with this mesh's own codes (MESH0001, MESH0002).

Line format (istio.io: reference/config/analysis/message-format, with the namespaced
`ns/name` form recent istioctl prints): `Level [CODE] (Kind ns/name) message`. The exit status
follows istioctl's default `--failure-threshold Error`: 79 (ExitAnalyzerFoundIssues) when any
finding is an Error, else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import yaml

from mesh.resources.registry import default_registry
from services.xds.generators.authorization import target_refs
from services.xds.generators.view import labels_of, meta
from services.xds.generators.waypoints import USE_WAYPOINT, USE_WAYPOINT_NAMESPACE, WAYPOINT_CLASS
from services.xds.model import (
    AUTHORIZATION_POLICIES,
    GATEWAYS,
    GRPC_ROUTES,
    HTTP_ROUTES,
    NAMESPACES,
    PEER_AUTHENTICATIONS,
    PODS,
    REQUEST_AUTHENTICATIONS,
    SERVICE_ENTRIES,
    SERVICES,
    WORKLOAD_ENTRIES,
    ConfigStore,
)

from .kubeconfig import KubeconfigError
from .mesh_snapshot import SnapshotError, load_store

Json = dict[str, Any]

ERROR, WARNING, INFO = "Error", "Warning", "Info"
_RANK = {ERROR: 0, WARNING: 1, INFO: 2}
EXIT_FOUND_ERRORS = 79  # istioctl: ExitAnalyzerFoundIssues
AMBIENT_LABEL = "istio.io/dataplane-mode"

NEGATIVE_CONDITION = "IST0171"  # NegativeConditionStatus
NOT_FOUND = "IST0101"  # ReferencedResourceNotFound
UNUSED_WAYPOINT = "MESH0001"
WAYPOINT_NOT_AMBIENT = "MESH0002"
ISTIO_DOCS = "https://istio.io/latest/docs/reference/config/analysis/{code}/"
MESH_DOCS = "docs/meshctl.md#{code}"

# Condition types read per kind (IST0171's table, plus RequestAuthentication's and
# PeerAuthentication's conditions this mesh writes, and Pods' WaypointBound).
WATCHED_CONDITIONS: dict[str, tuple[str, ...]] = {
    AUTHORIZATION_POLICIES: ("ZtunnelAccepted", "WaypointAccepted"),
    REQUEST_AUTHENTICATIONS: ("WaypointAccepted",),
    PEER_AUTHENTICATIONS: ("ZtunnelAccepted",),
    GATEWAYS: ("Accepted", "Programmed", "ResolvedRefs"),
    HTTP_ROUTES: ("Accepted", "ResolvedRefs"),
    GRPC_ROUTES: ("Accepted", "ResolvedRefs"),
    SERVICES: ("istio.io/WaypointBound",),
    SERVICE_ENTRIES: ("istio.io/WaypointBound",),
    WORKLOAD_ENTRIES: ("istio.io/WaypointBound",),
    PODS: ("istio.io/WaypointBound",),
}
# (type, reason) pairs that report a problem although their status is True.
TRUE_BUT_PARTIAL = {("WaypointAccepted", "PartiallyInvalid"), ("ZtunnelAccepted", "UnsupportedValue")}
BINDING_KINDS = (NAMESPACES, SERVICES, SERVICE_ENTRIES, PODS, WORKLOAD_ENTRIES)
TARGET_KINDS = {
    ("", "Service"): SERVICES,
    ("core", "Service"): SERVICES,
    ("networking.istio.io", "ServiceEntry"): SERVICE_ENTRIES,
    ("gateway.networking.k8s.io", "Gateway"): GATEWAYS,
}


@dataclass(frozen=True)
class Finding:
    """One analyzer message about one object."""

    level: str
    code: str
    kind: str
    namespace: str
    name: str
    message: str

    @property
    def origin(self) -> str:
        """`Kind ns/name`, or `Kind name` for a cluster-scoped object."""
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def line(self) -> str:
        return f"{self.level} [{self.code}] ({self.origin}) {self.message}"

    def as_json(self) -> Json:
        """The shape of istioctl's `-o json` entries."""
        docs = (ISTIO_DOCS if self.code.startswith("IST") else MESH_DOCS).format(code=self.code.lower())
        return {
            "code": self.code,
            "level": self.level,
            "origin": self.origin,
            "message": self.message,
            "documentationUrl": docs,
        }


def kind_name(kind: str) -> str:
    """The Kind of a kind key (`security.istio.io/authorizationpolicies` → AuthorizationPolicy)."""
    found = default_registry().by_key(kind)
    return found.kind if found else kind


# --- findings from status conditions --------------------------------------------------------------


def condition_findings(kind: str, obj: Json) -> list[Finding]:
    """IST0171 for each negative condition on `obj` (and on its route parents' and its Gateway
    listeners' status: a listener's certificate that does not resolve is reported there)."""
    types = WATCHED_CONDITIONS.get(kind)
    if not types:
        return []
    status = obj.get("status") or {}
    conditions = [("", c) for c in status.get("conditions") or []]
    for parent in status.get("parents") or []:
        conditions += [("", c) for c in parent.get("conditions") or []]
    for listener in status.get("listeners") or []:
        conditions += [(f"listener {listener.get('name', '')}: ", c) for c in listener.get("conditions") or []]
    out = []
    for where, cond in conditions:
        ctype, value, reason = cond.get("type"), cond.get("status"), cond.get("reason", "")
        if ctype not in types:
            continue
        if value == "False":
            text = "A condition with a negative status is present"
        elif value == "True" and (ctype, reason) in TRUE_BUT_PARTIAL:
            text = "A condition reports a partial problem"
        else:
            continue
        message = f"{where}{text}: type={ctype}, reason={reason}, message={cond.get('message', '')}"
        out.append(_finding(WARNING, NEGATIVE_CONDITION, kind, obj, message))
    return out


def _finding(level: str, code: str, kind: str, obj: Json, message: str) -> Finding:
    namespace = meta(obj).get("namespace", "") if kind != NAMESPACES else ""
    return Finding(level, code, kind_name(kind), namespace, meta(obj).get("name", ""), message)


# --- findings computed from the objects -----------------------------------------------------------


def waypoint_ref(kind: str, obj: Json) -> tuple[str, str] | None:
    """The (namespace, name) of the waypoint an object's own labels name, or None ("none" or no label)."""
    labels = labels_of(obj)
    name = labels.get(USE_WAYPOINT)
    if not name or name == "none":
        return None
    own_namespace = meta(obj)["name"] if kind == NAMESPACES else meta(obj).get("namespace", "")
    return labels.get(USE_WAYPOINT_NAMESPACE) or own_namespace, name


def dangling_waypoints(store: ConfigStore) -> Iterator[Finding]:
    """IST0101 for `istio.io/use-waypoint` naming a Gateway that does not exist."""
    for kind in BINDING_KINDS:
        for obj in store.list(kind):
            ref = waypoint_ref(kind, obj)
            if ref is None or store.get(GATEWAYS, *ref) is not None:
                continue
            message = (
                f'Referenced waypoint not found: "{ref[0]}/{ref[1]}" (label {USE_WAYPOINT}); create it with: '
                f"meshctl waypoint apply -n {ref[0]} --name {ref[1]}, or fix the label"
            )
            yield _finding(ERROR, NOT_FOUND, kind, obj, message)


def unused_waypoints(store: ConfigStore) -> Iterator[Finding]:
    """MESH0001 for a waypoint Gateway that no namespace, service, pod or entry binds to."""
    used = {ref for kind in BINDING_KINDS for obj in store.list(kind) if (ref := waypoint_ref(kind, obj))}
    for gateway in store.list(GATEWAYS):
        if (gateway.get("spec") or {}).get("gatewayClassName") != WAYPOINT_CLASS:
            continue
        namespace, name = meta(gateway).get("namespace", ""), meta(gateway)["name"]
        if (namespace, name) in used:
            continue
        message = (
            "No namespace, service, pod or ServiceEntry uses this waypoint, so no traffic reaches it; "
            f"bind one with: kubectl label namespace {namespace} {USE_WAYPOINT}={name}"
        )
        yield _finding(INFO, UNUSED_WAYPOINT, GATEWAYS, gateway, message)


def waypoint_namespaces_not_ambient(store: ConfigStore) -> Iterator[Finding]:
    """MESH0002 for a namespace that names a waypoint but is not in the ambient mesh."""
    for ns in store.list(NAMESPACES):
        ref = waypoint_ref(NAMESPACES, ns)
        if ref is None or labels_of(ns).get(AMBIENT_LABEL) == "ambient":
            continue
        name = meta(ns)["name"]
        message = (
            f'The namespace uses waypoint "{ref[0]}/{ref[1]}" but is not in the ambient mesh, so its traffic '
            f"never reaches the waypoint; add it with: kubectl label namespace {name} {AMBIENT_LABEL}=ambient"
        )
        yield _finding(WARNING, WAYPOINT_NOT_AMBIENT, NAMESPACES, ns, message)


def missing_policy_targets(store: ConfigStore) -> Iterator[Finding]:
    """IST0101 for a policy `targetRefs` entry naming a Service, ServiceEntry or Gateway that does not exist."""
    for kind in (AUTHORIZATION_POLICIES, REQUEST_AUTHENTICATIONS):
        for policy in store.list(kind):
            namespace = meta(policy).get("namespace", "")
            for i, ref in enumerate(target_refs(policy.get("spec") or {})):
                target = TARGET_KINDS.get((ref.get("group") or "", ref.get("kind") or ""))
                if target is None:
                    continue
                where = ref.get("namespace") or namespace
                if store.get(target, where, ref.get("name", "")) is None:
                    message = (
                        f'Referenced {ref["kind"]} not found: "{where}/{ref.get("name")}" (spec.targetRefs[{i}]); '
                        "the policy applies nowhere until it exists"
                    )
                    yield _finding(ERROR, NOT_FOUND, kind, policy, message)


def missing_route_parents(store: ConfigStore) -> Iterator[Finding]:
    """IST0101 for an HTTPRoute or GRPCRoute parentRef naming a Service or Gateway that does not exist."""
    for kind in (HTTP_ROUTES, GRPC_ROUTES):
        for route in store.list(kind):
            namespace = meta(route).get("namespace", "")
            for i, ref in enumerate((route.get("spec") or {}).get("parentRefs") or []):
                group = ref.get("group", "gateway.networking.k8s.io")
                target = TARGET_KINDS.get((group, ref.get("kind") or "Gateway"))
                if target is None:
                    continue
                where = ref.get("namespace") or namespace
                if store.get(target, where, ref.get("name", "")) is None:
                    message = (
                        f'Referenced {ref.get("kind") or "Gateway"} not found: "{where}/{ref.get("name")}" '
                        f"(spec.parentRefs[{i}]); the route is attached nowhere until it exists"
                    )
                    yield _finding(ERROR, NOT_FOUND, kind, route, message)


ANALYZERS: tuple[Callable[[ConfigStore], Iterable[Finding]], ...] = (
    dangling_waypoints,
    unused_waypoints,
    waypoint_namespaces_not_ambient,
    missing_policy_targets,
    missing_route_parents,
)


def analyze(store: ConfigStore, namespace: str | None) -> list[Finding]:
    """Every finding about objects of `namespace` (None: all), Errors first, each once."""
    found: list[Finding] = []
    for kind in WATCHED_CONDITIONS:
        for obj in store.list(kind):
            found += condition_findings(kind, obj)
    for analyzer in ANALYZERS:
        found += analyzer(store)
    if namespace is not None:
        found = [f for f in found if (f.namespace or (f.name if f.kind == "Namespace" else "")) == namespace]
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda f: (_RANK[f.level], f.kind, f.namespace, f.name, f.code, f.message))


# --- output ---------------------------------------------------------------------------------------


def scope(namespace: str | None) -> str:
    return "all namespaces" if namespace is None else f"namespace: {namespace}"


def render(findings: list[Finding], namespace: str | None, output: str = "log") -> str:
    """One line per finding (or the all-clear line), or the findings as JSON / YAML."""
    if output in ("json", "yaml"):
        data = [f.as_json() for f in findings]
        return json.dumps(data, indent=2) if output == "json" else yaml.safe_dump(data, sort_keys=False).rstrip()
    if not findings:
        return f"✔ No validation issues found when analyzing {scope(namespace)}."
    return "\n".join(f.line() for f in findings)


def exit_code(findings: list[Finding]) -> int:
    """79 when any finding is an Error (istioctl's default failure threshold), else 0."""
    return EXIT_FOUND_ERRORS if any(f.level == ERROR for f in findings) else 0


def run(args: argparse.Namespace, make_client: Callable[[argparse.Namespace], httpx.Client]) -> int:
    """`meshctl analyze`: print the findings; exit 79 on any Error, 1 when istiod cannot be read."""
    namespace = None if args.all_namespaces else args.namespace
    try:
        with make_client(args) as client:
            store = load_store(client)
    except (SnapshotError, KubeconfigError, OSError) as e:
        print(f"meshctl: {e}", file=sys.stderr)
        return 1
    findings = analyze(store, namespace)
    print(render(findings, namespace, args.output))
    code = exit_code(findings)
    if code and args.output == "log":
        print(
            f"Error: Analyzers found issues when analyzing {scope(namespace)}.\n"
            "See docs/meshctl.md (Diagnostics) for more information about causes and resolutions.",
            file=sys.stderr,
        )
    return code


def add_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """`meshctl analyze` under the top-level subparsers."""
    p = sub.add_parser("analyze", help="report configuration problems (negative status conditions, dangling refs)")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-o", "--output", choices=["log", "json", "yaml"], default="log")
    p.add_argument("--state-dir", help="istiod's state directory (env MESH_STATE_DIR)")
    p.add_argument("--kubeconfig", help="use this kubeconfig instead of the state directory")
    p.set_defaults(func=func)
