"""`meshctl gateway list|status`: ingress Gateways (class `istio`) as their status reports them —
addresses, each listener's attached routes and conditions — the way `kubectl get gateway` and
`istioctl` users read them. Status is written by mesh-worker (docs/ingress.md); this only reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import httpx
import yaml

from .kubeconfig import KubeconfigError
from .waypoint import Api, WaypointError, gateway_list
from .xds import table

Json = dict[str, Any]
INGRESS_CLASS = "istio"


def _conditions(conditions: list[Json] | None) -> dict[str, Json]:
    return {c.get("type", ""): c for c in conditions or []}


def _state(conditions: list[Json] | None, kind: str) -> str:
    return (_conditions(conditions).get(kind) or {}).get("status", "Unknown")


def render_list(gateways: list[Json], all_namespaces: bool, output: str) -> str:
    """NAME CLASS ADDRESS PROGRAMMED LISTENERS (like `kubectl get gateway`), or the List as json/yaml."""

    def row(gw: Json) -> list[str]:
        meta, status = gw["metadata"], gw.get("status") or {}
        addresses = ",".join(a.get("value", "") for a in status.get("addresses") or []) or "<none>"
        return [
            meta["name"],
            gw["spec"].get("gatewayClassName", ""),
            addresses,
            _state(status.get("conditions"), "Programmed"),
            str(len(gw["spec"].get("listeners") or [])),
        ]

    headers = ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "LISTENERS"]
    return gateway_list(gateways, all_namespaces, output, "No ingress gateways found.", headers, row)


def render_status(gw: Json) -> tuple[str, bool]:
    """The Gateway's addresses, conditions and listeners; True when it and every listener are
    Programmed with their references resolved."""
    meta, status = gw["metadata"], gw.get("status") or {}
    lines = [f"Gateway {meta['namespace']}/{meta['name']} (class {gw['spec'].get('gatewayClassName', '')})"]
    addresses = [a.get("value", "") for a in status.get("addresses") or []]
    lines.append(f"  addresses: {', '.join(addresses) if addresses else '<none yet>'}")
    healthy = True
    for kind, cond in _conditions(status.get("conditions")).items():
        lines.append(f"  {kind}: {cond.get('status')} ({cond.get('reason', '')}) {cond.get('message', '')}".rstrip())
        healthy &= cond.get("status") == "True"
    if not status.get("conditions"):
        lines.append("  no status yet: mesh-worker has not reconciled it (are mesh-worker and mesh-xds running?)")
        healthy = False
    listeners = {entry.get("name"): entry for entry in status.get("listeners") or []}
    rows = []
    for spec in gw["spec"].get("listeners") or []:
        entry = listeners.get(spec.get("name"), {})
        conds = entry.get("conditions")
        problems = [
            f"{c['type']}={c['status']} ({c.get('reason', '')}: {c.get('message', '')})"
            for c in conds or []
            if c.get("status") != "True"
        ]
        healthy &= bool(conds) and not problems
        rows.append(
            [
                spec.get("name", ""),
                spec.get("protocol", ""),
                str(spec.get("port", "")),
                spec.get("hostname") or "*",
                str(entry.get("attachedRoutes", 0)),
                _state(conds, "Programmed"),
                "; ".join(problems) or "-",
            ]
        )
    if rows:
        headers = ["LISTENER", "PROTOCOL", "PORT", "HOSTNAME", "ROUTES", "PROGRAMMED", "PROBLEMS"]
        lines += ["", table(headers, rows)]
    return "\n".join(lines), healthy


def _ingress(items: list[Json]) -> list[Json]:
    return [g for g in items if (g.get("spec") or {}).get("gatewayClassName") == INGRESS_CLASS]


def run(args: argparse.Namespace, make_client: Callable[[argparse.Namespace], httpx.Client]) -> int:
    """The `meshctl gateway` subcommands; errors are one line on stderr and exit 1."""
    try:
        with make_client(args) as client:
            api = Api(client)
            if args.gateway_command == "list":
                path = (
                    "/apis/gateway.networking.k8s.io/v1/gateways"
                    if args.all_namespaces
                    else api.gateway_path(args.namespace)
                )
                items = api.ok(api.request("GET", path), "listing Gateways").get("items") or []
                print(render_list(_ingress(items), args.all_namespaces, args.output))
                return 0
            gw = api.gateway(args.namespace, args.name)
            if gw is None:
                raise WaypointError(f'Gateway "{args.namespace}/{args.name}" not found')
            if args.output in ("json", "yaml"):
                body = gw.get("status") or {}
                print(json.dumps(body, indent=2) if args.output == "json" else yaml.safe_dump(body, sort_keys=False))
                return 0
            text, healthy = render_status(gw)
            print(text)
            return 0 if healthy else 1
    except (WaypointError, KubeconfigError) as e:
        print(f"meshctl: {e}", file=sys.stderr)
        return 1


def add_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """`meshctl gateway list|status` under the top-level subparsers."""
    gw = sub.add_parser("gateway", help="ingress Gateways: addresses, listeners, attached routes, conditions")
    gsub = gw.add_subparsers(dest="gateway_command", required=True)
    for name, text in (("list", "the ingress Gateways of a namespace (or all with -A)"), ("status", "one Gateway")):
        p = gsub.add_parser(name, help=text)
        p.add_argument("-n", "--namespace", default="default")
        p.add_argument("--state-dir", help="istiod's state directory (env MESH_STATE_DIR)")
        p.add_argument("--kubeconfig", help="use this kubeconfig instead of the state directory")
        p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
        p.set_defaults(func=func)
        if name == "list":
            p.add_argument("-A", "--all-namespaces", action="store_true")
        else:
            p.add_argument("name")
