"""istio-cni exec'd for real at the end of a bridge + host-local chain, as a container runtime runs it
(root only): ADD in list order with each result passed on as prevResult, CHECK with the cached
result, DEL in reverse order. The chain runs inside a node namespace this test creates, so the
bridge `cni0` never appears in the root namespace.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dataplane.cni.events import AgentReply
from mesh import netns
from tests import harness
from tests.fakes.fake_cni_agent import FakeAgent

from .podnet import need_root

pytestmark = pytest.mark.netns
SUBNET = "198.18.250"
CNI_DIR = Path("/usr/lib/cni")


@dataclass
class Chain:
    node: str
    pod: str
    conflist: dict
    agent: FakeAgent

    def env(self, command: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": "uid-chain-1",
            "CNI_NETNS": str(netns.path(self.pod)),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": f"{CNI_DIR}:{harness.VENV_BIN}",
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web;"
            "K8S_POD_INFRA_CONTAINER_ID=uid-chain-1;K8S_POD_UID=uid-chain-1",
        }

    def exec_plugin(self, plugin: dict, command: str, prev: dict | None) -> subprocess.CompletedProcess:
        """Run one plugin in the node namespace with the runtime's additions to its config."""
        conf = {**plugin, "name": self.conflist["name"], "cniVersion": self.conflist["cniVersion"]}
        if prev is not None:
            conf["prevResult"] = prev
        binary = harness.VENV_BIN / "istio-cni" if plugin["type"] == "istio-cni" else CNI_DIR / plugin["type"]
        return subprocess.run(
            ["ip", "netns", "exec", self.node, str(binary)],
            input=json.dumps(conf),
            env=self.env(command),
            capture_output=True,
            text=True,
            timeout=30,
        )

    def add(self) -> list[dict]:
        """ADD through the list; returns each plugin's result."""
        results: list[dict] = []
        for plugin in self.conflist["plugins"]:
            done = self.exec_plugin(plugin, "ADD", results[-1] if results else None)
            assert done.returncode == 0, f"{plugin['type']} ADD: {done.stdout} {done.stderr}"
            assert done.stdout.strip(), f"{plugin['type']} printed no result"
            results.append(json.loads(done.stdout))
        return results


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    need_root()
    harness.need("root", (CNI_DIR / "bridge").exists(), "containernetworking-plugins not installed")
    tag = secrets.token_hex(3)
    node, pod = f"mesh-t-{tag}-n", f"mesh-t-{tag}-p"
    agent = FakeAgent(tmp_path / "pluginevent.sock", AgentReply(ok=True, enrolled=False, captured=False))
    conflist = {
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
                    "dataDir": str(tmp_path / "ipam"),
                    "ranges": [[{"subnet": f"{SUBNET}.0/24", "gateway": f"{SUBNET}.1"}]],
                    "routes": [{"dst": "198.18.0.0/15", "gw": f"{SUBNET}.1"}],
                },
            },
            {"type": "istio-cni", "agent_socket": str(agent.path), "hold": False, "hold_timeout": 5},
        ],
    }
    try:
        netns.create(node)
        netns.create(pod)
        yield Chain(node, pod, conflist, agent)
    finally:
        try:
            netns.delete(pod)
            netns.delete(node)  # cni0 and the host-side veth live here and go with it
        finally:
            agent.close()


def test_chain_add_check_del(chain: Chain) -> None:
    bridge_result, final = chain.add()
    assert final == {**bridge_result, "cniVersion": "1.0.0"}, "istio-cni passes the chain's result through"
    assert final["ips"][0]["address"] == f"{SUBNET}.2/24"

    [event] = chain.agent.events
    assert (event.event, event.pod_namespace, event.pod_name, event.pod_uid) == ("ADD", "demo", "web", "uid-chain-1")
    assert event.netns == str(netns.path(chain.pod)) and event.ips == (f"{SUBNET}.2",)

    addresses = netns.exec_in(chain.pod, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    assert f"{SUBNET}.2/24" in addresses
    routes = netns.exec_in(chain.pod, ["ip", "-4", "route", "show"]).stdout
    assert "default" not in routes and "198.18.0.0/15" in routes

    for plugin in chain.conflist["plugins"]:  # CHECK with the cached final result
        done = chain.exec_plugin(plugin, "CHECK", final)
        assert done.returncode == 0 and not done.stdout.strip(), f"{plugin['type']} CHECK: {done.stdout}"

    for plugin in reversed(chain.conflist["plugins"]):
        done = chain.exec_plugin(plugin, "DEL", final)
        assert done.returncode == 0 and not done.stdout.strip(), f"{plugin['type']} DEL: {done.stdout}"
    assert [e.event for e in chain.agent.events] == ["ADD", "DEL"]
    assert "eth0" not in netns.exec_in(chain.pod, ["ip", "-o", "link"]).stdout


def test_version_and_agent_down(chain: Chain) -> None:
    version = chain.exec_plugin({"type": "istio-cni"}, "VERSION", None)
    assert json.loads(version.stdout)["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
    chain.agent.close()
    bridge_result, final = chain.add()
    assert final["ips"] == bridge_result["ips"], "the pod starts although the agent is down"
