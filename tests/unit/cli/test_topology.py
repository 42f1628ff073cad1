"""The cluster's network plan, compared with a golden file (the commands users could read)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from cli.cluster import topology

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "cluster" / "two-nodes.txt"


def test_the_two_node_network_matches_the_golden_file() -> None:
    text = "\n".join(" ".join(cmd) for cmd in topology.network_commands(2)) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_every_address_stays_in_the_benchmark_range_and_no_default_route() -> None:
    cluster = ipaddress.ip_network("198.18.0.0/15")
    for cmd in topology.network_commands(5):
        assert "default" not in cmd and "0.0.0.0/0" not in cmd
        for word in cmd:
            try:
                net = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            assert net.subnet_of(cluster), cmd


def test_node_ranges_do_not_overlap() -> None:
    plan = topology.nodes(50)
    pods = [ipaddress.ip_network(n.pod_cidr) for n in plan]
    assert all(not a.overlaps(b) for i, a in enumerate(pods) for b in pods[i + 1 :])
    assert len({n.ip for n in plan}) == 50
    services = ipaddress.ip_network(topology.SERVICE_RANGE)
    underlay = topology.UNDERLAY_NET
    assert not services.overlaps(underlay) and all(not p.overlaps(services) for p in pods)


def test_node_count_is_bounded() -> None:
    with pytest.raises(ValueError):
        topology.nodes(0)
    with pytest.raises(ValueError):
        topology.nodes(topology.MAX_NODES + 1)


def test_the_cni_chain_routes_the_cluster_via_the_node() -> None:
    node = topology.nodes(3)[2]
    conf = topology.conflist(node, "/state/nodes/node-3")
    bridge, cni = conf["plugins"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "198.18.3.0/24", "gateway": "198.18.3.1"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "198.18.0.0/15", "gw": "198.18.3.1"}]
    assert cni["type"] == "istio-cni" and cni["agent_socket"] == "/state/nodes/node-3/cni/pluginevent.sock"
