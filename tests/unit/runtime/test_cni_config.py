"""The runtime side of CNI as data: plugin configurations, environment, order, the bridge quirk."""

from __future__ import annotations

import pytest

from dataplane.runtime.cni_config import (
    ADD,
    CHECK,
    DEL,
    VERSION,
    Attachment,
    CniConfigError,
    NetworkList,
    format_args,
    order,
    passes_cached_result,
    plugin_config,
    plugin_env,
    pod_args,
    pod_ips,
    with_route_gateways,
)

pytestmark = pytest.mark.unit

CONFLIST = {
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
                "dataDir": "/tmp/ipam",
                "ranges": [[{"subnet": "198.18.1.0/24", "gateway": "198.18.1.1"}]],
                "routes": [{"dst": "198.18.0.0/15"}],
            },
        },
        {"type": "istio-cni", "agent_socket": "/tmp/sock", "hold": False},
    ],
}
RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/var/run/netns/mesh-pod-x"}],
    "ips": [{"interface": 2, "address": "198.18.1.2/24", "gateway": "198.18.1.1"}],
}


def att() -> Attachment:
    return Attachment("uid-1", "/var/run/netns/mesh-pod-1", "eth0", pod_args("ns", "web", "uid-1"), ("/a", "/b"))


def test_name_and_version_copied_into_each_plugin() -> None:
    net = NetworkList.from_json(CONFLIST)
    for i in range(2):
        conf = plugin_config(net, i, None)
        assert conf["name"] == "mesh"
        assert conf["cniVersion"] == "1.0.0"
        assert "prevResult" not in conf
    assert plugin_config(net, 1, None)["agent_socket"] == "/tmp/sock"


def test_prev_result_passed_and_plugin_config_not_mutated() -> None:
    net = NetworkList.from_json(CONFLIST)
    conf = plugin_config(net, 1, RESULT)
    assert conf["prevResult"] == RESULT
    conf["prevResult"]["ips"].clear()
    assert RESULT["ips"] and "prevResult" not in net.plugins[1]


def test_plugin_level_name_is_overridden_by_the_list() -> None:
    raw = {**CONFLIST, "plugins": [{"type": "bridge", "name": "other", "cniVersion": "0.3.1"}]}
    conf = plugin_config(NetworkList.from_json(raw), 0, None)
    assert (conf["name"], conf["cniVersion"]) == ("mesh", "1.0.0")


def test_order_add_forward_del_reverse_check_forward() -> None:
    net = NetworkList.from_json({**CONFLIST, "plugins": [{"type": "a"}, {"type": "b"}, {"type": "c"}]})
    assert order(net, ADD) == [0, 1, 2]
    assert order(net, DEL) == [2, 1, 0]
    assert order(net, CHECK) == [0, 1, 2]


def test_environment_is_complete_and_clean() -> None:
    env = plugin_env(ADD, att())
    assert env == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "uid-1",
        "CNI_NETNS": "/var/run/netns/mesh-pod-1",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=uid-1;"
        "K8S_POD_UID=uid-1",
        "CNI_PATH": "/a:/b",
        "PATH": env["PATH"],
    }
    assert set(plugin_env(VERSION, att())) == {"CNI_COMMAND", "CNI_PATH", "PATH"}


def test_format_args() -> None:
    assert format_args([("A", "1"), ("B", "x")]) == "A=1;B=x"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "object"),
        ({"cniVersion": "1.0.0", "plugins": [{"type": "x"}]}, "conflist.name"),
        ({"name": "n", "plugins": [{"type": "x"}]}, "conflist.cniVersion"),
        ({"name": "n", "cniVersion": "1.0.0", "plugins": []}, "conflist.plugins"),
        ({"name": "n", "cniVersion": "1.0.0", "plugins": [{"bridge": "x"}]}, "conflist.plugins[0].type"),
    ],
)
def test_invalid_conflists_name_the_field(raw: object, field: str) -> None:
    with pytest.raises(CniConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        NetworkList.from_json(raw)  # type: ignore[arg-type]


def test_bridge_routes_get_the_range_gateway() -> None:
    net, notes = with_route_gateways(NetworkList.from_json(CONFLIST))
    assert net.plugins[0]["ipam"]["routes"] == [{"dst": "198.18.0.0/15", "gw": "198.18.1.1"}]
    assert len(notes) == 1 and "198.18.1.1" in notes[0]
    assert CONFLIST["plugins"][0]["ipam"]["routes"] == [{"dst": "198.18.0.0/15"}]  # input untouched


def test_gateway_defaults_to_first_address_and_explicit_gw_is_kept() -> None:
    plugin = {
        "type": "bridge",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "198.18.7.0/24"}]],
            "routes": [{"dst": "198.18.0.0/15"}, {"dst": "198.19.0.0/16", "gw": "198.18.7.9"}],
        },
    }
    net, notes = with_route_gateways(NetworkList.from_json({**CONFLIST, "plugins": [plugin]}))
    assert net.plugins[0]["ipam"]["routes"] == [
        {"dst": "198.18.0.0/15", "gw": "198.18.7.1"},
        {"dst": "198.19.0.0/16", "gw": "198.18.7.9"},
    ]
    assert len(notes) == 1


def test_non_bridge_plugins_are_left_alone() -> None:
    plugin = {
        "type": "ptp",
        "ipam": {"type": "host-local", "subnet": "198.18.3.0/24", "routes": [{"dst": "0.0.0.0/0"}]},
    }
    net, notes = with_route_gateways(NetworkList.from_json({**CONFLIST, "plugins": [plugin]}))
    assert net.plugins[0] == plugin and notes == []


def test_pod_ips_only_from_the_sandbox_interface() -> None:
    result = {**RESULT, "ips": [*RESULT["ips"], {"interface": 0, "address": "198.18.1.1/24"}]}
    assert pod_ips(result) == ["198.18.1.2"]
    assert pod_ips({"ips": [{"address": "198.18.1.5/24"}]}) == ["198.18.1.5"]
    assert pod_ips({}) == []


@pytest.mark.parametrize(("version", "expected"), [("1.0.0", True), ("0.4.0", True), ("0.3.1", False)])
def test_cached_result_on_del_from_0_4_0(version: str, expected: bool) -> None:
    assert passes_cached_result(version) is expected
