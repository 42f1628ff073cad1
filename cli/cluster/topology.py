"""The cluster's network as data: which namespaces, links, addresses and routes a cluster of N
nodes has (docs/cluster.md). Pure: `network_commands()` lists the `ip` commands that build it,
so tests compare them with a golden file and `network.py` only runs them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

UNDERLAY_NS = "mesh-underlay"
UNDERLAY_BRIDGE = "mesh-br0"
UNDERLAY_NET = ipaddress.ip_network("198.19.255.0/24")
ROOT_LINK, ROOT_PEER = "mesh-root", "mesh-root-p"
ROOT_IP = "198.19.255.1"
POD_RANGE = "198.18.0.0/16"
SERVICE_RANGE = "198.19.0.0/17"
CLUSTER_RANGE = "198.18.0.0/15"
# Ranges the root namespace never needs: routed nowhere, so nothing of the cluster leaks out.
ROOT_UNREACHABLE = (POD_RANGE, SERVICE_RANGE)
MAX_NODES = 200


@dataclass(frozen=True)
class NodePlan:
    index: int

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    @property
    def netns(self) -> str:
        return f"mesh-node-{self.index}"

    @property
    def underlay_link(self) -> str:
        return f"mesh-n{self.index}"

    @property
    def ip(self) -> str:
        return str(UNDERLAY_NET.network_address + 10 + self.index)

    @property
    def pod_cidr(self) -> str:
        return f"198.18.{self.index}.0/24"

    @property
    def pod_gateway(self) -> str:
        return f"198.18.{self.index}.1"


def nodes(count: int) -> list[NodePlan]:
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"--nodes must be between 1 and {MAX_NODES}")
    return [NodePlan(i) for i in range(1, count + 1)]


def underlay_commands() -> list[list[str]]:
    """The underlay namespace and bridge, and the root namespace's link into it."""
    ns = ["ip", "netns", "exec", UNDERLAY_NS]
    return [
        ["ip", "netns", "add", UNDERLAY_NS],
        [*ns, "ip", "link", "add", UNDERLAY_BRIDGE, "type", "bridge"],
        [*ns, "ip", "link", "set", UNDERLAY_BRIDGE, "up"],
        [*ns, "ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", ROOT_LINK, "type", "veth", "peer", "name", ROOT_PEER, "netns", UNDERLAY_NS],
        [*ns, "ip", "link", "set", ROOT_PEER, "master", UNDERLAY_BRIDGE, "up"],
        ["ip", "addr", "add", f"{ROOT_IP}/{UNDERLAY_NET.prefixlen}", "dev", ROOT_LINK],
        ["ip", "link", "set", ROOT_LINK, "up"],
        *[["ip", "route", "add", "unreachable", cidr] for cidr in ROOT_UNREACHABLE],
    ]


def node_commands(node: NodePlan, all_nodes: list[NodePlan]) -> list[list[str]]:
    """One node: its namespace, its link to the underlay, forwarding, and routes to the others' pods.

    No default route: the node reaches the underlay (control plane, other nodes) and, through
    `cni0`, its own pods; nothing else."""
    ns = ["ip", "netns", "exec", node.netns]
    under = ["ip", "netns", "exec", UNDERLAY_NS]
    commands = [
        ["ip", "netns", "add", node.netns],
        [*ns, "ip", "link", "set", "lo", "up"],
        [*under, "ip", "link", "add", node.underlay_link, "type", "veth", "peer", "name", "eth0", "netns", node.netns],
        [*under, "ip", "link", "set", node.underlay_link, "master", UNDERLAY_BRIDGE, "up"],
        [*ns, "ip", "addr", "add", f"{node.ip}/{UNDERLAY_NET.prefixlen}", "dev", "eth0"],
        [*ns, "ip", "link", "set", "eth0", "up"],
        [*ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
    ]
    for other in all_nodes:
        if other.index != node.index:
            commands.append([*ns, "ip", "route", "add", other.pod_cidr, "via", other.ip])
    # The control plane answers pods (a waypoint asks mesh-ca and mesh-xds for its certificate and
    # configuration, as a Kubernetes pod reaches the API server): the root namespace routes this
    # node's pod range to it, more specific than the unreachable pod range. The route goes with
    # the root link when the cluster is taken down.
    commands.append(["ip", "route", "add", node.pod_cidr, "via", node.ip])
    return commands


def network_commands(count: int) -> list[list[str]]:
    plan = nodes(count)
    out = underlay_commands()
    for node in plan:
        out += node_commands(node, plan)
    return out


def conflist(node: NodePlan, node_dir: str) -> dict:
    """The node's CNI chain (docs/cluster.md): bridge + host-local, then istio-cni."""
    return pod_conflist(node.pod_cidr, node.pod_gateway, node_dir)


def pod_conflist(pod_cidr: str, pod_gateway: str, node_dir: str) -> dict:
    """The CNI chain of a node whose pods take `pod_cidr` behind `pod_gateway` (any node: the
    local cluster's, or a container's, docs/compose.md)."""
    return {
        "cniVersion": "1.0.0",
        "name": "mesh",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": f"{node_dir}/cni/ipam",
                    "ranges": [[{"subnet": pod_cidr, "gateway": pod_gateway}]],
                    # An explicit gateway on the route keeps bridge's CHECK happy (plugins 1.1.1).
                    "routes": [{"dst": CLUSTER_RANGE, "gw": pod_gateway}],
                },
            },
            {
                "type": "istio-cni",
                "agent_socket": f"{node_dir}/cni/pluginevent.sock",
                "hold": False,
                "hold_timeout": 10,
            },
        ],
    }
