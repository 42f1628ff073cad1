"""Building and removing the cluster's network (the commands come from topology.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from mesh import netns

from . import topology


class ClusterError(Exception):
    """Something the cluster tool could not do; the message says what and what to try."""


def run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"`{' '.join(cmd)}` failed: {result.stderr.strip() or result.stdout.strip()}")


def build(count: int, progress: Callable[[str], None]) -> None:
    """Create the underlay and every node; the caller removes a half-built one first."""
    progress(
        f"creating the underlay ({topology.UNDERLAY_NS}, bridge {topology.UNDERLAY_BRIDGE}, "
        f"root link {topology.ROOT_LINK} {topology.ROOT_IP})"
    )
    for cmd in topology.underlay_commands():
        run(cmd)
    plan = topology.nodes(count)
    for node in plan:
        progress(f"creating {node.name}: namespace {node.netns}, {node.ip}, pods {node.pod_cidr}")
        for cmd in topology.node_commands(node, plan):
            run(cmd)


def teardown(pod_namespaces: list[str], node_count: int, progress: Callable[[str], None]) -> list[str]:
    """Remove pods' and nodes' namespaces, the underlay, the root link and routes. Returns what
    could not be removed (empty when everything went)."""
    left: list[str] = []
    if pod_namespaces:
        progress(f"removing {len(pod_namespaces)} pod namespace(s)")
    for name in pod_namespaces:
        _try(lambda name=name: netns.delete(name), f"netns {name}", left)
    nodes = [f"mesh-node-{i}" for i in range(1, node_count + 1)]
    for name in nodes:
        if netns.exists(name):
            progress(f"removing {name}")
        _try(lambda name=name: netns.delete(name), f"netns {name}", left)
    if netns.exists(topology.UNDERLAY_NS):
        progress(f"removing {topology.UNDERLAY_NS}")
    _try(lambda: netns.delete(topology.UNDERLAY_NS), f"netns {topology.UNDERLAY_NS}", left)
    if subprocess.run(["ip", "link", "show", topology.ROOT_LINK], capture_output=True).returncode == 0:
        _try(lambda: run(["ip", "link", "delete", topology.ROOT_LINK]), f"link {topology.ROOT_LINK}", left)
    for cidr in topology.ROOT_UNREACHABLE:
        shown = subprocess.run(["ip", "route", "show", "type", "unreachable", cidr], capture_output=True, text=True)
        if shown.stdout.strip():
            _try(lambda cidr=cidr: run(["ip", "route", "delete", "unreachable", cidr]), f"route {cidr}", left)
    return left


def _try(action: Callable[[], None], what: str, left: list[str]) -> None:
    try:
        action()
    except (OSError, ClusterError) as e:
        left.append(f"{what}: {e}")
