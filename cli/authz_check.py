"""`meshctl x authz check SRC DST:PORT [METHOD PATH]`: would this connection / request be allowed?

Nothing here re-implements a policy rule. The objects are read from the API into a ConfigStore,
then:
- L4: the real `Translator` (services/xds/generators) turns them into the Workload, Service and
  Authorization resources a ztunnel receives; they are loaded into a ztunnel `StateStore` and
  each destination endpoint is checked with `dataplane/ztunnel/rbac.check`, as the destination's
  ztunnel does on 15008 (or 15006 for a source outside the mesh);
- L7 (when the destination has a waypoint): the real `EnvoyTranslator` builds the waypoint's
  Listener `waypoint/{N}/{G}`; the filter chain for (VIP, port) gives the RBAC filters, and
  `dataplane/waypoint/l7/rbac.RbacEngine` evaluates a Request built from METHOD, PATH and the
  source's principal.

Behind a waypoint the destination's ztunnel sees the waypoint's identity, not the source's
(mesh-features-and-user-needs §E.5), so the L4 rows are evaluated with that identity and the
output says so.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import yaml
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from dataplane.waypoint.l7.model import Request
from dataplane.waypoint.l7.rbac import RBAC_FILTER, RbacDecision, RbacEngine
from dataplane.waypoint.l7.rbac import Action as L7Action
from dataplane.ztunnel import rbac
from dataplane.ztunnel.state.load_balancing import target_port
from dataplane.ztunnel.state.store import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, StateStore
from dataplane.ztunnel.state.workload import TunnelProtocol, Workload
from mesh.identity import Identity
from services.xds.generators import Translator
from services.xds.generators.envoy import EnvoyTranslator
from services.xds.generators.envoy.resources import service_host, waypoint_listener_name
from services.xds.generators.resources import pod_uid
from services.xds.generators.view import IndexedView, meta
from services.xds.generators.waypoints import GATEWAY_NAME, service_waypoint, workload_waypoint
from services.xds.model import AUTHORIZATION_POLICIES, PODS, SERVICES, ConfigStore
from services.xds.types import LISTENER

from . import bindings
from .kubeconfig import KubeconfigError
from .mesh_snapshot import SnapshotError, load_store
from .xds import table

Json = dict[str, Any]
HCM_FILTER = "envoy.filters.network.http_connection_manager"
MAX_ENDPOINTS = 5
NO_IP = ipaddress.ip_address("0.0.0.0")


class AuthzCheckError(Exception):
    """The source or destination cannot be found; the message says what to pass instead."""


@dataclass(frozen=True)
class Row:
    """One line of the answer: which layer, its decision, the deciding policy and why."""

    layer: str
    decision: str
    policy: str
    reason: str


@dataclass
class Answer:
    """The rows, in the order traffic meets them, and notes that explain them."""

    source: str
    destination: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return all(r.decision != "DENY" for r in self.rows)


@dataclass(frozen=True)
class Target:
    """The destination: a Service or a pod, and the port asked for."""

    kind: str  # "service" | "pod"
    obj: Json
    port: int

    @property
    def name(self) -> str:
        return f"{meta(self.obj).get('namespace')}/{meta(self.obj)['name']}"


# --- parsing and lookup (pure) --------------------------------------------------------------------


def split_name(text: str, default_namespace: str) -> tuple[str, str]:
    """`[ns/]name` → (ns, name)."""
    namespace, _, name = text.rpartition("/")
    return namespace or default_namespace, name


def find_source(store: ConfigStore, text: str, default_namespace: str) -> Json:
    namespace, name = split_name(text, default_namespace)
    pod = store.get(PODS, namespace, name)
    if pod is None:
        raise AuthzCheckError(f'source pod "{namespace}/{name}" not found; SRC is a pod, [namespace/]name')
    return pod


def find_target(store: ConfigStore, text: str, default_namespace: str) -> Target:
    """DST:PORT where DST is `[ns/]name` (a Service of that name, else a pod) or an IP (a Service
    VIP or a pod IP)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AuthzCheckError(f"{text!r}: the destination needs a port, DST:PORT (e.g. reviews:9080)")
    port = int(port_text)
    try:
        ip = str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        ip = None
    if ip is not None:
        for svc in store.list(SERVICES):
            if (svc.get("spec") or {}).get("clusterIP") == ip:
                return Target("service", svc, port)
        for pod in store.list(PODS):
            if (pod.get("status") or {}).get("podIP") == ip:
                return Target("pod", pod, port)
        raise AuthzCheckError(f"no Service VIP or pod IP is {ip}")
    namespace, name = split_name(host, default_namespace)
    for kind, label in ((SERVICES, "service"), (PODS, "pod")):
        if (obj := store.get(kind, namespace, name)) is not None:
            return Target(label, obj, port)
    raise AuthzCheckError(f'no Service or pod "{namespace}/{name}"; DST is [namespace/]name or an IP, with :PORT')


# --- the ztunnel's view (L4) ----------------------------------------------------------------------


def ztunnel_state(store: ConfigStore) -> StateStore:
    """What every ztunnel would hold: the Translator's Addresses and Authorizations."""
    translator = Translator()
    translator.rebuild(store)
    state = StateStore()
    state.apply(ADDRESS_TYPE_URL, dict(translator.addresses))
    state.apply(AUTHORIZATION_TYPE_URL, dict(translator.authorizations))
    return state


def _endpoints(state: StateStore, target: Target) -> tuple[list[tuple[Workload, int]], str | None]:
    """(workload, port it is reached on) for the destination, or a reason there is none."""
    if target.kind == "pod":
        workload = state.workload(pod_uid(meta(target.obj).get("namespace", ""), meta(target.obj)["name"]))
        if workload is None:
            return [], "the pod has no workload yet (it needs status.podIP and a non-terminal phase)"
        return [(workload, target.port)], None
    key = f"{meta(target.obj).get('namespace')}/{service_host(meta(target.obj)['name'], meta(target.obj)['namespace'])}"
    service = state.service(key)
    if service is None:
        return [], f"no Service {key} in the translated state"
    if target.port not in service.ports:
        ports = ", ".join(str(p) for p in sorted(service.ports)) or "none"
        return [], f"the Service has no port {target.port} (ports: {ports})"
    out = []
    for workload in state.workloads():
        if key in workload.services and (port := target_port(service, workload, target.port)) is not None:
            out.append((workload, port))
    return out[:MAX_ENDPOINTS], None if out else "the Service has no endpoint (no running pod with an IP)"


def _l4_row(state: StateStore, workload: Workload, port: int, peer: Identity | None, peer_ip: Any) -> Row:
    layer = f"L4 ztunnel {workload.node or '?'} -> {workload.namespace}/{workload.name}:{port}"
    if workload.tunnel_protocol is not TunnelProtocol.HBONE:
        return Row(layer, "ALLOW", "-", "the destination is not captured: no ztunnel enforces L4 policy for it")
    connection = rbac.Connection(
        source_identity=peer,
        source_ip=peer_ip,
        destination_ip=workload.addresses[0] if workload.addresses else NO_IP,
        destination_port=port,
        destination_workload=workload,
    )
    decision = rbac.check(state, connection)
    policy = "-"
    if decision.policy is not None:
        held = state.policy(decision.policy)
        policy = f"{decision.policy} ({held.action.value if held else '?'})"
    return Row(layer, "ALLOW" if decision.allowed else "DENY", policy, decision.reason)


# --- the waypoint's view (L7) ---------------------------------------------------------------------


def waypoint_of(store: ConfigStore, target: Target) -> tuple[str, str] | None:
    """The Gateway (ns, name) the destination's traffic goes through, when it is bound."""
    view = IndexedView(store)
    binding = service_waypoint(view, target.obj) if target.kind == "service" else workload_waypoint(view, target.obj)
    return binding.waypoint if binding.bound else None


@dataclass(frozen=True)
class WaypointChain:
    """The RBAC filters of one waypoint filter chain: their configs (in listener order) and the engine."""

    configs: tuple[http_rbac_pb2.RBAC, ...]
    engine: RbacEngine


def waypoint_rbac(store: ConfigStore, ref: tuple[str, str], vip: str, port: int) -> WaypointChain | None:
    """The RBAC filters of the waypoint's filter chain for (VIP, port), from the real EnvoyTranslator
    (None when the waypoint has no such chain)."""
    translator = EnvoyTranslator()
    translator.rebuild(store)
    listener = translator.resources(LISTENER).get(waypoint_listener_name(*ref))
    if listener is None:
        return None
    for chain in listener.filter_chains:
        match = chain.filter_chain_match
        if match.destination_port.value != port or vip not in {p.address_prefix for p in match.prefix_ranges}:
            continue
        for network_filter in chain.filters:
            if network_filter.name == HCM_FILTER:
                hcm = hcm_pb2.HttpConnectionManager()
                network_filter.typed_config.Unpack(hcm)
                configs = []
                for f in hcm.http_filters:  # as RbacEngine.from_http_filters picks them
                    if f.name == RBAC_FILTER and not f.disabled:
                        config = http_rbac_pb2.RBAC()
                        f.typed_config.Unpack(config)
                        configs.append(config)
                return WaypointChain(tuple(configs), RbacEngine(configs))
    return None


def policy_of(store: ConfigStore, rbac_name: str) -> str:
    """`ns/name` of an RBAC policy named `{ns}.{policy}` or `{ns}.{policy}.{i}` (docs/waypoint.md)."""
    namespace, _, rest = rbac_name.partition(".")
    if store.get(AUTHORIZATION_POLICIES, namespace, rest) is None:
        head, _, tail = rest.rpartition(".")
        if tail.isdigit() and store.get(AUTHORIZATION_POLICIES, namespace, head) is not None:
            rest = head
    return f"{namespace}/{rest}"


def l7_row(store: ConfigStore, ref: tuple[str, str], chain: WaypointChain, decision: RbacDecision, request: str) -> Row:
    layer = f"L7 waypoint {ref[0]}/{ref[1]}"
    policy = f"{policy_of(store, decision.policy)} ({decision.action.name})" if decision.policy else "-"
    if decision.allowed:
        if decision.action is None:
            reason = "no L7 AuthorizationPolicy applies at the waypoint"
        elif decision.action is L7Action.ALLOW:
            reason = f"{request} matched an ALLOW rule"
        else:
            reason = f"{request} matched no DENY rule"
        return Row(layer, "ALLOW", policy, reason)
    if decision.action is L7Action.DENY:
        return Row(layer, "DENY", policy, f"{request} matched a DENY rule")
    # Refused by the ALLOW filter: name the ALLOW policies that were tried and did not match.
    tried = sorted({policy_of(store, name) for name in allow_policy_names(chain, decision)})
    policy = ", ".join(f"{name} (ALLOW)" for name in tried) or "-"
    return Row(layer, "DENY", policy, f"{request} matched no rule of the ALLOW policies that apply")


def allow_policy_names(chain: WaypointChain, decision: RbacDecision) -> list[str]:
    """The RBAC policy names of the filter that refused the request (its `rules.policies`)."""
    if decision.filter_index is None:
        return []
    return sorted(chain.configs[decision.filter_index].rules.policies)


# --- the whole answer -----------------------------------------------------------------------------


def _identity(pod: Json) -> Identity:
    return Identity.parse(bindings.identity_of(pod))


def _ip(text: str | None) -> Any:
    try:
        return ipaddress.ip_address(text or "")
    except ValueError:
        return NO_IP


def waypoint_pod_ip(store: ConfigStore, ref: tuple[str, str]) -> str | None:
    for pod in store.list(PODS, ref[0]):
        if (meta(pod).get("labels") or {}).get(GATEWAY_NAME) == ref[1] and (pod.get("status") or {}).get("podIP"):
            return pod["status"]["podIP"]
    return None


def check(store: ConfigStore, source: Json, target: Target, method: str = "GET", path: str = "/") -> Answer:
    """Decide, layer by layer, whether `source` may reach `target` (and send METHOD PATH)."""
    answer = Answer(f"{meta(source).get('namespace')}/{meta(source)['name']}", f"{target.name}:{target.port}")
    src_identity, src_ip = _identity(source), _ip((source.get("status") or {}).get("podIP"))
    captured = bindings.enrolled(source)
    if not captured:
        answer.notes.append(
            "the source is not captured by a ztunnel: it connects in plaintext, with no identity and no waypoint"
        )
    ref = waypoint_of(store, target) if captured else None
    peer, peer_ip = (src_identity if captured else None), src_ip
    if ref is not None:
        vip = (target.obj.get("spec") or {}).get("clusterIP", "") if target.kind == "service" else ""
        chain = waypoint_rbac(store, ref, vip, target.port) if vip else None
        request = f"{method} {path}"
        if chain is None:
            why = "the waypoint has no filter chain for this address and port (its chains are per Service VIP:port)"
            answer.rows.append(Row(f"L7 waypoint {ref[0]}/{ref[1]}", "-", "-", why))
        else:
            host = service_host(meta(target.obj)["name"], meta(target.obj)["namespace"])
            req = Request(
                method=method,
                path=path,
                authority=f"{host}:{target.port}",
                headers=[],
                destination_port=target.port,
                source_ip=str(src_ip),
                source_principal=str(src_identity),
                destination_ip=vip,
            )
            answer.rows.append(l7_row(store, ref, chain, chain.engine.evaluate(req), request))
        waypoint_id = bindings.waypoint_identity(store, ref)
        peer, peer_ip = Identity.parse(waypoint_id), _ip(waypoint_pod_ip(store, ref))
        answer.notes.append(
            f"traffic goes through waypoint {ref[0]}/{ref[1]}: the destination's ztunnel sees the waypoint's "
            f"identity {waypoint_id}, not {src_identity}; L4 policies at the destination must allow the waypoint, "
            "and policies on the client's identity belong on the waypoint (targetRefs)"
        )
    state = ztunnel_state(store)
    endpoints, missing = _endpoints(state, target)
    if missing:
        answer.rows.append(Row("L4", "-", "-", missing))
    for workload, port in endpoints:
        answer.rows.append(_l4_row(state, workload, port, peer, peer_ip))
    return answer


def render(answer: Answer, output: str = "table") -> str:
    if output in ("json", "yaml"):
        data = {**asdict(answer), "allowed": answer.allowed}
        return json.dumps(data, indent=2) if output == "json" else yaml.safe_dump(data, sort_keys=False).rstrip()
    rows = [[r.layer, r.decision, r.policy, r.reason] for r in answer.rows]
    text = f"{answer.source} -> {answer.destination}\n" + table(["LAYER", "DECISION", "POLICY", "REASON"], rows)
    return "\n".join([text, *[f"Note: {n}" for n in answer.notes]])


def run(args: argparse.Namespace, make_client: Callable[[argparse.Namespace], httpx.Client]) -> int:
    """`meshctl x authz check`: the table; exit 0 whatever the decision, 1 when the objects cannot be found."""
    try:
        with make_client(args) as client:
            store = load_store(client)
        source = find_source(store, args.source, args.namespace)
        target = find_target(store, args.destination, args.namespace)
        answer = check(store, source, target, args.method.upper(), args.path)
    except (SnapshotError, KubeconfigError, AuthzCheckError, OSError) as e:
        print(f"meshctl: {e}", file=sys.stderr)
        return 1
    print(render(answer, args.output))
    return 0


def add_parser(xsub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """`meshctl x authz check` under the `x` subparsers."""
    authz = xsub.add_parser("authz", help="authorization diagnostics")
    asub = authz.add_subparsers(dest="authz_command", required=True)
    p = asub.add_parser("check", help="would SRC be allowed to reach DST:PORT (and send METHOD PATH)?")
    p.add_argument("source", metavar="SRC", help="a pod: [namespace/]name")
    p.add_argument("destination", metavar="DST:PORT", help="a Service or pod ([namespace/]name) or an IP, with :PORT")
    p.add_argument("method", metavar="METHOD", nargs="?", default="GET")
    p.add_argument("path", metavar="PATH", nargs="?", default="/")
    p.add_argument("-n", "--namespace", default="default", help="namespace of SRC and DST when they name none")
    p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    p.add_argument("--state-dir", help="istiod's state directory (env MESH_STATE_DIR)")
    p.add_argument("--kubeconfig", help="use this kubeconfig instead of the state directory")
    p.set_defaults(func=func)
