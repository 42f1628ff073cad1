"""`meshctl waypoint apply|list|status|delete`: waypoint Gateways, as istioctl's `waypoint` commands.

The commands only write and read Gateways (and the namespace label); mesh-worker turns a Gateway
into its Service and pods (docs/waypoint.md) when mesh-xds queues the job, so nothing here asks a
server to do more than store objects. Output lines follow istioctl's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import yaml

from .kubeconfig import KubeconfigError
from .xds import table

Json = dict[str, Any]

GATEWAY_API = "/apis/gateway.networking.k8s.io/v1"
WAYPOINT_CLASS = "istio-waypoint"
WAYPOINT_FOR = "istio.io/waypoint-for"
USE_WAYPOINT = "istio.io/use-waypoint"
DATAPLANE_MODE = "istio.io/dataplane-mode"
REVISION = "istio.io/rev"
SERVICE_ACCOUNT_ANNOTATION = "gateway.istio.io/service-account"
REPLICAS_ANNOTATION = "mesh.istio.io/replicas"
DEFAULT_TIMEOUT = 90.0
MERGE = {"Content-Type": "application/merge-patch+json"}


class WaypointError(Exception):
    """One line saying what went wrong and what to do."""


# --- talking to istiod ---------------------------------------------------------------------------


class Api:
    """istiod's API with its failures turned into WaypointError lines."""

    def __init__(self, client: httpx.Client):
        self.client = client

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kw)
        except httpx.TransportError as e:
            raise WaypointError(
                f"cannot reach istiod at {self.client.base_url} ({e or type(e).__name__}): is it running? "
                "pass --state-dir or --kubeconfig to point at it"
            ) from None
        if response.status_code == 401:
            raise WaypointError(
                "istiod refused the credentials (401 Unauthorized): the token is not valid for this istiod; "
                "write a fresh kubeconfig with: meshctl kubeconfig --state-dir DIR"
            )
        if response.status_code == 403:
            raise WaypointError(f"istiod forbids this (403): {_message(response)}")
        return response

    def ok(self, response: httpx.Response, what: str) -> Json:
        if response.status_code >= 400:
            raise WaypointError(f"{what}: {_message(response)}")
        return response.json()

    def gateway_path(self, namespace: str, name: str = "") -> str:
        path = f"{GATEWAY_API}/namespaces/{namespace}/gateways"
        return f"{path}/{name}" if name else path

    def namespace(self, namespace: str) -> Json:
        response = self.request("GET", f"/api/v1/namespaces/{namespace}")
        if response.status_code == 404:
            raise WaypointError(
                f'namespace "{namespace}" not found; create it with: kubectl create namespace {namespace}'
            )
        return self.ok(response, f"reading namespace {namespace}")

    def gateway(self, namespace: str, name: str) -> Json | None:
        response = self.request("GET", self.gateway_path(namespace, name))
        if response.status_code == 404:
            return None
        return self.ok(response, f"reading Gateway {namespace}/{name}")


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"
    return f"{body.get('reason') or response.status_code}: {body.get('message') or response.text[:200]}"


# --- what the commands decide (pure) -------------------------------------------------------------


def gateway_manifest(
    namespace: str, name: str, traffic_for: str | None, service_account: str | None, replicas: int | None
) -> Json:
    """The Gateway `istioctl waypoint generate` writes, with this mesh's optional annotations."""
    metadata: Json = {"name": name, "namespace": namespace}
    if traffic_for:
        metadata["labels"] = {WAYPOINT_FOR: traffic_for}
    annotations = {}
    if service_account:
        annotations[SERVICE_ACCOUNT_ANNOTATION] = service_account
    if replicas is not None:
        annotations[REPLICAS_ANNOTATION] = str(replicas)
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": metadata,
        "spec": {
            "gatewayClassName": WAYPOINT_CLASS,
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    }


def same_waypoint(current: Json, wanted: Json) -> bool:
    """Whether `current` already is what `apply` would write (then applying again is a no-op)."""
    meta, want = current.get("metadata") or {}, wanted["metadata"]
    return (
        current.get("spec", {}).get("gatewayClassName") == wanted["spec"]["gatewayClassName"]
        and current.get("spec", {}).get("listeners") == wanted["spec"]["listeners"]
        and all((meta.get("labels") or {}).get(k) == v for k, v in (want.get("labels") or {}).items())
        and all((meta.get("annotations") or {}).get(k) == v for k, v in (want.get("annotations") or {}).items())
    )


def _conditions(gateway: Json) -> dict[str, Json]:
    return {c.get("type"): c for c in (gateway.get("status") or {}).get("conditions") or []}


def readiness(gateway: Json) -> tuple[bool, str]:
    """(ready, what is missing): ready once the Gateway is Programmed."""
    conds = _conditions(gateway)
    accepted, programmed = conds.get("Accepted"), conds.get("Programmed")
    if not conds:
        return False, "no status yet: mesh-worker has not reconciled it (are mesh-worker and mesh-xds running?)"
    if accepted and accepted.get("status") == "False":
        return False, f"not accepted ({accepted.get('reason')}): {accepted.get('message')}"
    if programmed is None:
        return False, "no Programmed condition yet"
    if programmed.get("status") == "True":
        return True, ""
    return False, f"Programmed={programmed.get('status')} ({programmed.get('reason')}): {programmed.get('message')}"


def is_waypoint(gateway: Json) -> bool:
    return (gateway.get("spec") or {}).get("gatewayClassName") == WAYPOINT_CLASS


def gateway_list(
    gateways: list[Json],
    all_namespaces: bool,
    output: str,
    empty: str,
    headers: list[str],
    row: Callable[[Json], list[str]],
) -> str:
    """Gateways as a table of `headers` (a NAMESPACE column first with `all_namespaces`), one
    `row(gateway)` each, or as a List with -o json|yaml; `empty` when there are none (the waypoint
    and ingress gateway lists)."""
    if output in ("json", "yaml"):
        doc = {"apiVersion": "v1", "kind": "List", "items": gateways}
        return json.dumps(doc, indent=2) if output == "json" else yaml.safe_dump(doc, sort_keys=False).rstrip()
    if not gateways:
        return empty
    rows = [[gw["metadata"]["namespace"], *row(gw)] if all_namespaces else row(gw) for gw in gateways]
    return table(["NAMESPACE", *headers] if all_namespaces else headers, rows)


def render_list(gateways: list[Json], all_namespaces: bool, output: str) -> str:
    """istioctl's `waypoint list` table, or the Gateways as a List with -o json|yaml."""

    def row(gw: Json) -> list[str]:
        meta = gw["metadata"]
        labels = meta.get("labels") or {}
        programmed = (_conditions(gw).get("Programmed") or {}).get("status", "False")
        return [meta["name"], labels.get(REVISION, "default"), labels.get(WAYPOINT_FOR, "service"), programmed]

    headers = ["NAME", "REVISION", "TRAFFIC TYPE", "PROGRAMMED"]
    return gateway_list(gateways, all_namespaces, output, "No waypoints found.", headers, row)


# --- the commands --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyOptions:
    namespace: str
    name: str
    enroll_namespace: bool = False
    traffic_for: str | None = None
    wait: bool = False
    timeout: float = DEFAULT_TIMEOUT
    overwrite: bool = False
    service_account: str | None = None
    replicas: int | None = None


def apply(api: Api, opts: ApplyOptions, say: Callable[[str], None], warn: Callable[[str], None]) -> None:
    """Create (or with --overwrite replace) the Gateway, then optionally wait and enroll the namespace."""
    ns_obj = api.namespace(opts.namespace)
    wanted = gateway_manifest(opts.namespace, opts.name, opts.traffic_for, opts.service_account, opts.replicas)
    current = api.gateway(opts.namespace, opts.name)
    where = f"{opts.namespace}/{opts.name}"
    if current is None:
        api.ok(api.request("POST", api.gateway_path(opts.namespace), json=wanted), f"creating waypoint {where}")
    elif not same_waypoint(current, wanted):
        if not opts.overwrite:
            raise WaypointError(
                f"Gateway {where} already exists and differs from the waypoint asked for; "
                "pass --overwrite to replace it"
            )
        wanted["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        response = api.request("PUT", api.gateway_path(opts.namespace, opts.name), json=wanted)
        api.ok(response, f"replacing waypoint {where}")
    say(f"✅ waypoint {where} applied")
    if opts.wait:
        wait_ready(api, opts.namespace, opts.name, opts.timeout, say)
    if opts.enroll_namespace:
        enroll(api, ns_obj, opts.name, opts.overwrite, say, warn)


def enroll(
    api: Api, ns_obj: Json, name: str, overwrite: bool, say: Callable[[str], None], warn: Callable[[str], None]
) -> None:
    """Label the namespace `istio.io/use-waypoint=NAME` (refusing to switch waypoints without --overwrite)."""
    namespace = ns_obj["metadata"]["name"]
    labels = ns_obj["metadata"].get("labels") or {}
    if labels.get(USE_WAYPOINT) not in (None, name) and not overwrite:
        raise WaypointError(
            f'namespace {namespace} already uses waypoint "{labels[USE_WAYPOINT]}"; '
            f'pass --overwrite to switch it to "{name}"'
        )
    if labels.get(DATAPLANE_MODE) != "ambient":
        warn(
            f"⚠️ namespace {namespace} is not in the ambient mesh, so its traffic will not reach the waypoint; "
            f"add it with: kubectl label namespace {namespace} {DATAPLANE_MODE}=ambient"
        )
    patch = {"metadata": {"labels": {USE_WAYPOINT: name}}}
    api.ok(api.request("PATCH", f"/api/v1/namespaces/{namespace}", json=patch, headers=MERGE), f"labeling {namespace}")
    say(f'✅ namespace {namespace} labeled with "{USE_WAYPOINT}: {name}"')


def wait_ready(
    api: Api,
    namespace: str,
    name: str,
    timeout: float,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 0.5,
) -> None:
    """Poll until Programmed=True or `timeout`; says what it waits for when that changes."""
    where = f"{namespace}/{name}"
    deadline = clock() + timeout
    last = ""
    while True:
        gateway = api.gateway(namespace, name)
        if gateway is None:
            raise WaypointError(f"waypoint {where} was deleted while waiting for it")
        ready, missing = readiness(gateway)
        if ready:
            say(f"✅ waypoint {where} is ready!")
            return
        if missing != last:
            say(f"⏳ waiting for waypoint {where}: {missing}")
            last = missing
        if clock() >= deadline:
            raise WaypointError(f"waypoint {where} is not ready after {timeout:g}s: {missing}")
        sleep(min(interval, max(0.0, deadline - clock())))


def list_waypoints(api: Api, namespace: str | None) -> list[Json]:
    if namespace is not None:
        api.namespace(namespace)
    path = api.gateway_path(namespace) if namespace else f"{GATEWAY_API}/gateways"
    items = api.ok(api.request("GET", path), "listing Gateways")["items"]
    waypoints = [g for g in items if is_waypoint(g)]
    return sorted(waypoints, key=lambda g: (g["metadata"]["namespace"], g["metadata"]["name"]))


def status(api: Api, namespace: str, name: str) -> str:
    """`✅ waypoint NS/NAME is ready!`, or WaypointError saying what is pending."""
    api.namespace(namespace)
    gateway = api.gateway(namespace, name)
    where = f"{namespace}/{name}"
    if gateway is None or not is_waypoint(gateway):
        raise WaypointError(
            f"waypoint {where} not found; create it with: meshctl waypoint apply -n {namespace} --name {name}"
        )
    ready, missing = readiness(gateway)
    if not ready:
        raise WaypointError(f"waypoint {where} is not ready: {missing}")
    return f"✅ waypoint {where} is ready!"


def delete(api: Api, namespace: str, names: list[str], everything: bool) -> tuple[list[str], list[str]]:
    """Delete the named waypoints (or every waypoint of the namespace); returns (lines, errors)."""
    api.namespace(namespace)
    if everything:
        names = [g["metadata"]["name"] for g in list_waypoints(api, namespace)]
    lines, errors = [], []
    for name in names:
        where = f"{namespace}/{name}"
        gateway = api.gateway(namespace, name)
        if gateway is None:
            errors.append(f"waypoint {where} not found")
            continue
        if not is_waypoint(gateway):
            cls = gateway["spec"].get("gatewayClassName")
            errors.append(f"Gateway {where} is of class {cls}, not a waypoint; delete it with kubectl if you mean it")
            continue
        response = api.request("DELETE", api.gateway_path(namespace, name))
        if response.status_code == 404:
            errors.append(f"waypoint {where} not found")
            continue
        api.ok(response, f"deleting waypoint {where}")
        lines.append(f"waypoint {where} deleted")
    return lines, errors


# --- command line --------------------------------------------------------------------------------


def _seconds(value: str) -> float:
    """`90`, `90s` or `2m` (istioctl's --waypoint-timeout is a Go duration)."""
    text = value.strip().lower()
    scale = 60 if text.endswith("m") else 1
    number = text[:-1] if text.endswith(("m", "s")) else text
    try:
        seconds = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration (e.g. 90s, 2m)") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{value!r}: the timeout must be between 1s and 1h")
    return seconds


def _replicas(value: str) -> int:
    if not value.isdigit() or int(value) > 16:
        raise argparse.ArgumentTypeError(f"{value!r}: replicas must be a whole number from 0 to 16")
    return int(value)


def _out(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, make_client: Callable[[argparse.Namespace], httpx.Client]) -> int:
    """The `meshctl waypoint` subcommands; errors are one line on stderr and exit 1."""
    try:
        with make_client(args) as client:
            api = Api(client)
            command = args.waypoint_command
            if command == "apply":
                opts = ApplyOptions(
                    args.namespace,
                    args.name,
                    args.enroll_namespace,
                    args.traffic_for,
                    args.wait,
                    args.waypoint_timeout,
                    args.overwrite,
                    args.service_account,
                    args.replicas,
                )
                apply(api, opts, _out, _err)
            elif command == "list":
                gateways = list_waypoints(api, None if args.all_namespaces else args.namespace)
                _out(render_list(gateways, args.all_namespaces, args.output))
            elif command == "status":
                _out(status(api, args.namespace, args.name))
            else:
                if not args.names and not args.all:
                    raise WaypointError("name the waypoints to delete, or pass --all")
                lines, errors = delete(api, args.namespace, args.names, args.all)
                for line in lines:
                    _out(line)
                for error in errors:
                    _err(f"meshctl: {error}")
                return 1 if errors else 0
    except (WaypointError, KubeconfigError) as e:
        _err(f"meshctl: {e}")
        return 1
    return 0


def add_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """`meshctl waypoint ...` under the top-level subparsers."""
    wp = sub.add_parser("waypoint", help="apply, list, check and delete waypoint Gateways (like istioctl's)")
    wsub = wp.add_subparsers(dest="waypoint_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-n", "--namespace", default="default")
        p.add_argument("--state-dir", help="istiod's state directory (env MESH_STATE_DIR)")
        p.add_argument("--kubeconfig", help="use this kubeconfig instead of the state directory")
        p.set_defaults(func=func)

    ap = wsub.add_parser("apply", help="create (or replace) a waypoint Gateway")
    common(ap)
    ap.add_argument("--name", default="waypoint", help="the Gateway's name (default waypoint)")
    ap.add_argument("--enroll-namespace", action="store_true", help=f"label the namespace {USE_WAYPOINT}=NAME")
    ap.add_argument(
        "--for",
        dest="traffic_for",
        choices=["service", "workload", "all", "none"],
        help=f"the traffic the waypoint takes (label {WAYPOINT_FOR}; Istio's default: service)",
    )
    ap.add_argument("--wait", action="store_true", help="wait until the waypoint is Programmed")
    ap.add_argument("--waypoint-timeout", type=_seconds, default=DEFAULT_TIMEOUT, help="how long --wait waits (90s)")
    ap.add_argument("--overwrite", action="store_true", help="replace a different Gateway or namespace waypoint")
    ap.add_argument("--service-account", help="the waypoint pods' service account (default waypoint)")
    ap.add_argument("--replicas", type=_replicas, help="how many waypoint pods (default 1)")
    ls = wsub.add_parser("list", help="the waypoints of a namespace (or all with -A)")
    common(ls)
    ls.add_argument("-A", "--all-namespaces", action="store_true")
    ls.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    st = wsub.add_parser("status", help="whether a waypoint is ready, or what it waits for")
    common(st)
    st.add_argument("--name", default="waypoint")
    de = wsub.add_parser("delete", help="delete waypoint Gateways (their pods and Service follow)")
    common(de)
    de.add_argument("names", nargs="*", metavar="NAME")
    de.add_argument("--all", action="store_true", help="every waypoint of the namespace")
