"""`meshctl ztunnel-config workloads|services|policies|certificates|connections|all|log`.

Reads a node's ztunnel `/config_dump` on 127.0.0.1:15000 inside the node's network namespace
(`netns` in `{state}/nodes/NODE/node.json`; the port is the node's own, as `kubectl
port-forward` reaches istioctl's ztunnel) and prints it with istioctl's columns
(mesh-features-and-user-needs §C), or the raw sections with `-o json|yaml`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from mesh import admin_client

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


def _own_node(state_dir: Path) -> str | None:
    """The node whose own directory `state_dir` is (meshctl run on a node, as in a compose node
    container: node.json sits in the state directory itself), else None."""
    try:
        return json.loads((state_dir / "node.json").read_text())["name"]
    except (OSError, ValueError, KeyError):
        return None


def default_node(state_dir: Path) -> str:
    """The first node of the cluster (istioctl picks some ztunnel when none is named)."""
    nodes = sorted(p.parent.name for p in (state_dir / "nodes").glob("*/node.json"))
    if not nodes and (own := _own_node(state_dir)):
        return own
    if not nodes:
        raise ZtunnelConfigError(f"no nodes under {state_dir / 'nodes'} (is the cluster up? pass --state-dir)")
    return nodes[0]


@dataclass(frozen=True)
class AdminAddress:
    """Where a node's ztunnel answers its admin port: 127.0.0.1 inside the node's network
    namespace (`namespace`; None when meshctl runs on the node itself). The port listens on
    loopback only, so that no pod can read or stop its ztunnel (mesh/admin_client.py)."""

    namespace: str | None
    port: int = ADMIN_PORT

    def __str__(self) -> str:
        return f"127.0.0.1:{self.port}" + (f" in network namespace {self.namespace}" if self.namespace else "")


def locate(state_dir: Path, node: str, port: int = ADMIN_PORT) -> AdminAddress:
    """Node `node`'s ztunnel admin, from its node.json (`netns`: the namespace the cluster made)."""
    if _own_node(state_dir) == node:
        return AdminAddress(None, port)
    path = state_dir / "nodes" / node / "node.json"
    if not path.exists():
        known = ", ".join(sorted(p.parent.name for p in (state_dir / "nodes").glob("*/node.json"))) or "none"
        raise ZtunnelConfigError(f"no node {node} in the cluster at {state_dir} (its nodes: {known})")
    try:
        return AdminAddress(json.loads(path.read_text()).get("netns"), port)
    except (OSError, ValueError, AttributeError) as e:
        raise ZtunnelConfigError(f"cannot read node {node}'s {path}: {e}") from None


def fetch(admin: AdminAddress, timeout: float = 10) -> dict[str, Any]:
    """The ztunnel's /config_dump."""
    try:
        status, body = admin_client.request(admin.port, "/config_dump", namespace=admin.namespace, timeout=timeout)
    except admin_client.AdminError as e:
        raise ZtunnelConfigError(f"ztunnel did not answer: {e}") from None
    if status != 200:
        raise ZtunnelConfigError(f"ztunnel at {admin} answered /config_dump with {status}: {body[:200]!r}")
    try:
        return json.loads(body)
    except ValueError as e:
        raise ZtunnelConfigError(f"ztunnel at {admin} answered /config_dump with no JSON: {e}") from None


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


def _namespace_of(section: str, entry: dict[str, Any]) -> str | None:
    if section == "certificates":  # spiffe://TD/ns/NS/sa/SA
        parts = entry.get("identity", "").split("/")
        return parts[parts.index("ns") + 1] if "ns" in parts[:-1] else None
    if section == "connections":  # "NS/NAME"
        return entry.get("workload", "").partition("/")[0]
    return entry.get("namespace")


def in_namespace(dump: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The dump with each section's entries narrowed to `namespace` (istioctl's namespace filters):
    workloads, services and policies by their namespace, certificates by the identity's,
    connections by their workload's."""
    narrowed = dict(dump)
    for section in SECTIONS.values():
        if isinstance(dump.get(section), list):
            narrowed[section] = [e for e in dump[section] if _namespace_of(section, e) == namespace]
    return narrowed


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
    return [*SECTIONS, "all", "log", *ALIASES]


def log_levels(admin: AdminAddress, level: str | None = None, reset: bool = False, timeout: float = 10) -> str:
    """Show a ztunnel's log levels, or change them (`level`: `info`, `access:debug`, comma-separated;
    `reset`: back to its start-up level), as `istioctl ztunnel-config log` does; its answer."""
    if reset:
        method, path = "POST", "/logging?reset"
    elif level:
        method, path = "POST", "/logging?" + urlencode({"level": level})
    else:
        method, path = "GET", "/logging"
    try:
        status, body = admin_client.request(admin.port, path, namespace=admin.namespace, method=method, timeout=timeout)
    except admin_client.AdminError as e:
        raise ZtunnelConfigError(f"ztunnel did not answer: {e}") from None
    answer = body.decode(errors="replace").strip()
    if status != 200:
        raise ZtunnelConfigError(f"ztunnel at {admin} refused: {answer}")
    return answer
