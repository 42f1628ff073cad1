"""mesh-node's pure parts: settings → config, the route plan from Node objects, the node's own
rules, and the argv of its children (accepted by each child's own settings parser)."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

import pytest

from cli import node_main
from cli.node_main import NodeConfigError, NodeSettings, Route, resolve, route_commands, route_plan
from dataplane.cni.nodeagent.settings import AgentSettings
from dataplane.runtime.settings import RuntimeSettings
from dataplane.ztunnel.settings import ZtunnelSettings
from mesh.settings import parse_settings

pytestmark = pytest.mark.unit


def settings(**overrides: object) -> NodeSettings:
    values: dict[str, object] = {
        "name": "node-1",
        "pod_cidr": "198.18.1.0/24",
        "node_ip": "198.19.254.21",
        "istiod": "https://istiod:6443",
        "istiod_ca_file": "/var/lib/mesh/istiod-ca.pem",
        "ca": "198.19.254.11:15012",
        "xds": "198.19.254.12:15010",
        "root_cert": "/var/lib/mesh/root-cert.pem",
        "state_dir": "/var/lib/mesh-node",
        **overrides,
    }
    return NodeSettings(**values)


def node(name: str, cidr: str | None, ip: str | None) -> dict:
    obj: dict = {"metadata": {"name": name}, "spec": {}, "status": {}}
    if cidr:
        obj["spec"]["podCIDR"] = cidr
    if ip:
        obj["status"]["addresses"] = [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]
    return obj


def test_resolve_fills_the_gateway_and_the_mtls_address() -> None:
    config = resolve(settings())
    assert config.pod_gateway == "198.18.1.1"
    assert config.xds_mtls == "198.19.254.12:15013"
    assert config.token_file == Path("/var/lib/mesh-node/token")


def test_resolve_detects_the_node_ip_from_the_istiod_host_when_not_given() -> None:
    asked: list[tuple[str, int]] = []

    def detect(host: str, port: int) -> str:
        asked.append((host, port))
        return "198.19.254.99"

    assert resolve(settings(node_ip=""), detect).node_ip == "198.19.254.99"
    assert asked == [("istiod", 6443)]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "MESH_NAME= (missing"),
        ({"pod_cidr": "198.18.1.5/24"}, "MESH_POD_CIDR=198.18.1.5/24"),
        ({"pod_cidr": "198.18.1.0/31"}, "too small"),
        ({"istiod": "istiod:6443"}, "MESH_ISTIOD=istiod:6443"),
        ({"ca": "mesh-ca"}, "MESH_CA=mesh-ca"),
        ({"root_cert": None}, "MESH_ROOT_CERT= (missing"),
        ({"node_ip": ""}, "MESH_NODE_IP= (missing"),
        ({"control_plane_cidr": "nope"}, "MESH_CONTROL_PLANE_CIDR=nope"),
    ],
)
def test_resolve_refuses_with_one_line_naming_the_setting(overrides: dict, message: str) -> None:
    with pytest.raises(NodeConfigError) as err:
        resolve(settings(**overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_route_plan_reaches_every_other_node_through_its_internal_ip() -> None:
    nodes = [
        node("node-3", "198.18.3.0/24", "198.19.254.23"),
        node("node-1", "198.18.1.0/24", "198.19.254.21"),
        node("node-2", "198.18.2.0/24", "198.19.254.22"),
    ]
    routes, notes = route_plan(nodes, "node-1", "198.18.1.0/24")
    assert routes == [Route("198.18.2.0/24", "198.19.254.22"), Route("198.18.3.0/24", "198.19.254.23")]
    assert notes == []


def test_the_route_plan_waits_for_a_node_without_address_and_skips_overlaps() -> None:
    nodes = [
        node("node-2", "198.18.2.0/24", None),  # its runtime has not heart-beaten yet
        node("node-3", None, "198.19.254.23"),
        node("node-4", "198.18.1.128/25", "198.19.254.24"),  # inside this node's own range
        node("node-5", "198.18.5.0/24", "198.19.254.25"),
        node("node-6", "198.18.5.0/24", "198.19.254.26"),  # same range as node-5
        node("node-7", "not-a-cidr", "198.19.254.27"),
    ]
    routes, notes = route_plan(nodes, "node-1", "198.18.1.0/24")
    assert routes == [Route("198.18.5.0/24", "198.19.254.25")]
    assert [n.split(":")[0] for n in notes] == ["node-2", "node-3", "node-4", "node-6", "node-7"]


def test_route_commands_replace_what_is_wanted_and_delete_what_went_away() -> None:
    current = [Route("198.18.2.0/24", "198.19.254.22"), Route("198.18.3.0/24", "198.19.254.23")]
    desired = [Route("198.18.2.0/24", "198.19.254.32")]  # node-2 moved, node-3 left
    assert route_commands(current, desired) == [
        ["ip", "route", "del", "198.18.3.0/24", "via", "198.19.254.23"],
        ["ip", "route", "replace", "198.18.2.0/24", "via", "198.19.254.32"],
    ]
    assert route_commands(desired, desired) == [["ip", "route", "replace", "198.18.2.0/24", "via", "198.19.254.32"]]


def test_the_node_rules_stay_in_the_cluster_range_and_nat_only_towards_the_control_plane() -> None:
    rules = node_main.network_commands("198.18.1.0/24", "198.19.254.0/24")
    assert rules[0] == (None, ["ip", "route", "replace", "unreachable", "198.18.0.0/15"])
    check, apply = rules[1]
    assert check == ["iptables", "-t", "nat", "-C", *apply[4:]]
    assert apply[4:] == ["POSTROUTING", "-s", "198.18.1.0/24", "-d", "198.19.254.0/24", "-j", "MASQUERADE"]
    cluster = ipaddress.ip_network("198.18.0.0/15")
    for _, cmd in rules:
        assert "default" not in cmd and "0.0.0.0/0" not in cmd
        for word in cmd:
            try:
                assert ipaddress.ip_network(word).subnet_of(cluster), cmd
            except ValueError:
                continue
    assert len(node_main.network_commands("198.18.1.0/24", "")) == 1  # no control-plane network: no NAT


def test_children_are_the_three_node_processes_from_this_python(tmp_path: Path) -> None:
    argvs = node_main.child_argvs(resolve(settings()), bin_dir=tmp_path)
    assert list(argvs) == ["mesh-runtime", "mesh-node-agent", "ztunnel"]
    for program, argv in argvs.items():
        assert argv[0] == str(tmp_path / program)
        assert argv[argv.index("--node") + 1] == "node-1"
        assert argv[argv.index("--state-dir") + 1] == "/var/lib/mesh-node"
        assert argv[argv.index("--token-file") + 1] == "/var/lib/mesh-node/token"
    assert "--istiod" in argvs["mesh-runtime"] and "--istiod" not in argvs["ztunnel"]  # ztunnel reads node.json


@pytest.mark.parametrize(
    ("program", "cls"),
    [("mesh-runtime", RuntimeSettings), ("mesh-node-agent", AgentSettings), ("ztunnel", ZtunnelSettings)],
)
def test_each_child_accepts_its_argv(program: str, cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("MESH_")]:
        monkeypatch.delenv(key)
    argv = node_main.child_argvs(resolve(settings()))[program]
    parsed = parse_settings(cls, program, "", argv[1:])
    assert parsed.state_dir == Path("/var/lib/mesh-node")
    assert str(parsed.token_file) == "/var/lib/mesh-node/token"


def test_children_do_not_inherit_the_settings_meant_for_mesh_node() -> None:
    env = node_main.child_env({"PATH": "/usr/bin", "MESH_NAME": "node-1", "MESH_CA": "x", "HOME": "/root"})
    assert env == {"PATH": "/usr/bin", "HOME": "/root"}


def test_the_supervisor_reports_a_dead_child_and_stops_the_others() -> None:
    supervisor = node_main.Supervisor(
        {"long": ["sleep", "30"], "short": ["sh", "-c", "exit 3"]}, dict(os.environ), grace=5
    )
    supervisor.start()
    try:
        for _ in range(100):
            died = supervisor.dead()
            if died:
                break
            time.sleep(0.05)
        assert died == ("short", 3)
    finally:
        supervisor.stop()
    assert supervisor.procs["long"].returncode == -15  # SIGTERM forwarded, not killed
