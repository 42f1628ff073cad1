"""`meshctl ztunnel-config workloads|services|policies|certificates|connections|all`.

Reads a node's ztunnel `/config_dump` over the underlay (the node's IP from
`{state}/nodes/NODE/node.json`, admin port 15000) and prints it with istioctl's columns
(mesh-features-and-user-needs §C), or the raw sections with `-o json|yaml`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import yaml

from .xds import table

ADMIN_PORT = 15000
SECTIONS = {
    "workloads": "workloads",
    "services": "services",
    "policies": "policies",
    "certificates": "certificates",
    "connections": "connections",
}
ALIASES = {
    "w": "workloads",
    "workload": "workloads",
    "s": "services",
    "svc": "services",
    "service": "services",
    "p": "policies",
    "pol": "policies",
    "policy": "policies",
    "certs": "certificates",
    "certificate": "certificates",
    "secret": "certificates",
    "cons": "connections",
    "connection": "connections",
}


class ZtunnelConfigError(Exception):
    """The dump could not be had; the message says where it looked."""


def default_node(state_dir: Path) -> str:
    """The first node of the cluster (istioctl picks some ztunnel when none is named)."""
    nodes = sorted(p.parent.name for p in (state_dir / "nodes").glob("*/node.json"))
    if not nodes:
        raise ZtunnelConfigError(f"no nodes under {state_dir / 'nodes'} (is the cluster up? pass --state-dir)")
    return nodes[0]


def admin_url(state_dir: Path, node: str, port: int = ADMIN_PORT) -> str:
    path = state_dir / "nodes" / node / "node.json"
    if not path.exists():
        known = ", ".join(sorted(p.parent.name for p in (state_dir / "nodes").glob("*/node.json"))) or "none"
        raise ZtunnelConfigError(f"no node {node} in the cluster at {state_dir} (its nodes: {known})")
    try:
        ip = json.loads(path.read_text())["ip"]
    except (OSError, ValueError, KeyError) as e:
        raise ZtunnelConfigError(f"cannot read node {node}'s address from {path}: {e}") from None
    return f"http://{ip}:{port}"


def fetch(url: str, timeout: float = 10) -> dict[str, Any]:
    try:
        response = httpx.get(f"{url}/config_dump", timeout=timeout)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as e:
        raise ZtunnelConfigError(f"ztunnel at {url} did not answer /config_dump: {e}") from None


def _waypoint(value: str | None, names: dict[str, str]) -> str:
    """The waypoint's name, as istioctl prints it: ztunnel holds its address (`network/vip:port`
    or `namespace/hostname:port`), which is looked up among the services it knows."""
    if not value:
        return "None"
    return names.get(value.rsplit(":", 1)[0], value)


def _service_names(dump: dict[str, Any]) -> dict[str, str]:
    names = {}
    for s in dump.get("services", []):
        for vip in s.get("vips", []):
            names[vip] = s.get("name") or s["hostname"]
        names[f"{s['namespace']}/{s['hostname']}"] = s.get("name") or s["hostname"]
    return names


def workloads_table(dump: dict[str, Any]) -> str:
    names = _service_names(dump)
    rows = [
        [
            w["namespace"],
            w["name"],
            ",".join(w["addresses"]) or "None",
            w["node"] or "None",
            _waypoint(w.get("waypoint"), names),
            "HBONE" if w["protocol"] == "HBONE" else "TCP",
        ]
        for w in dump.get("workloads", [])
    ]
    return table(["NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"], rows)


def services_table(dump: dict[str, Any]) -> str:
    rows, names = [], _service_names(dump)
    for s in dump.get("services", []):
        endpoints = s.get("endpoints", {}).values()
        healthy = sum(1 for e in endpoints if e["status"] == "HEALTHY")
        vips = ",".join(v.split("/", 1)[-1] for v in s.get("vips", [])) or "None"
        rows.append(
            [s["namespace"], s["hostname"], vips, _waypoint(s.get("waypoint"), names), f"{healthy}/{len(endpoints)}"]
        )
    return table(["NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT", "ENDPOINTS"], rows)


def policies_table(dump: dict[str, Any]) -> str:
    rows = [[p["namespace"], p["name"], p["action"], p["scope"]] for p in dump.get("policies", [])]
    return table(["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"], rows)


def certificates_table(dump: dict[str, Any]) -> str:
    """A Leaf and a Root row per identity, as istioctl prints them."""
    rows = []
    for c in dump.get("certificates", []):
        entries = [("Leaf", e) for e in c.get("certChain", [])[:1]] + [("Root", e) for e in c.get("rootCert", [])]
        if not entries:
            rows.append([c["identity"], "Leaf", c["state"], "false", "-", "-", "-"])
        for kind, e in entries:
            valid = "true" if c["state"] == "Available" else "false"
            rows.append(
                [c["identity"], kind, c["state"], valid, e["serialNumber"], e["expirationTime"], e["validFrom"]]
            )
    headers = ["CERTIFICATE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]
    return table(headers, rows)


def connections_table(dump: dict[str, Any]) -> str:
    rows = [
        [c["workload"], c["direction"], c["local"], c["remote"], c["remoteTarget"], c["protocol"]]
        for c in dump.get("connections", [])
    ]
    return table(["WORKLOAD", "DIRECTION", "LOCAL", "REMOTE", "REMOTE TARGET", "PROTOCOL"], rows)


TABLES = {
    "workloads": workloads_table,
    "services": services_table,
    "policies": policies_table,
    "certificates": certificates_table,
    "connections": connections_table,
}
TITLES = {
    "workloads": "WORKLOAD",
    "services": "SERVICE",
    "policies": "POLICY",
    "certificates": "SECRET",
    "connections": "CONNECTIONS",
}


def render(dump: dict[str, Any], what: str, output: str = "table") -> str:
    """One section (or `all`) of the dump as a table, JSON or YAML."""
    what = ALIASES.get(what, what)
    if output in ("json", "yaml"):
        data = dump if what == "all" else dump.get(SECTIONS[what], [])
        return json.dumps(data, indent=2) if output == "json" else yaml.safe_dump(data, sort_keys=False).rstrip()
    if what != "all":
        return TABLES[what](dump)
    return "\n\n".join(f"{TITLES[name]} INFO\n{TABLES[name](dump)}" for name in TABLES)


def choices() -> list[str]:
    return [*SECTIONS, "all", *ALIASES]
