"""mesh-node-agent against a real istiod, real pod namespaces and the fake ztunnel (root only).

Two pod namespaces joined by a veth pair stand in for pods the runtime made; the real istio-cni
plugin is exec'd to tell the agent about them, as the runtime's CNI chain would. The tests then
drive everything through the API (labels) and real traffic.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mesh import netns
from tests import harness
from tests.fakes.fake_ztunnel import FakeZtunnel

from .podnet import PodNet, connect, need_root, pod_pair, rules_absent, rules_in_sync, ruleset_dump, stop_process
from .podnet import wait_until as _wait_until

pytestmark = pytest.mark.netns
NODE = "node-t1"
NS = "amb-t"
MODE = "istio.io/dataplane-mode"
INJECTION = "istio-injection"
ANNOTATION = "ambient.istio.io/redirection"
PORT = 7000


def wait_until(check, timeout: float = 5.0, what: str = "condition") -> float:
    return _wait_until(check, timeout, what)


@dataclass
class Agent:
    """A mesh-node-agent process with the node directory `state`."""

    state: Path
    istiod: harness.Istiod
    proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.state / "mesh-node-agent.log"

    def command(self, *extra: str) -> list[str]:
        return [
            str(harness.VENV_BIN / "mesh-node-agent"),
            "--node", NODE,
            "--state-dir", str(self.state),
            "--istiod", self.istiod.url,
            "--istiod-ca-file", str(self.istiod.ca_file),
            "--token-file", str(self.state / "token"),
            *extra,
        ]  # fmt: skip

    def readies(self) -> int:
        if not self.log.exists():
            return 0
        return sum(1 for line in self.log.read_text().splitlines() if '"msg":"ready"' in line.replace(" ", ""))

    def start(self) -> None:
        before = self.readies()
        self.proc = subprocess.Popen(self.command(), stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        harness.wait_for(lambda: self.readies() > before, 30, "mesh-node-agent to be ready", self.proc, self.log)

    def stop(self) -> None:
        if self.proc is not None:
            assert stop_process(self.proc) == 0, self.log.read_text()[-3000:]
            self.proc = None

    def uninstall(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.command("--uninstall"), capture_output=True, text=True, timeout=60)


@dataclass
class Env:
    istiod: harness.Istiod
    agent: Agent
    fake: FakeZtunnel
    a: PodNet
    b: PodNet
    server: subprocess.Popen
    uids: dict[str, str]
    add_outputs: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def plugin_socket(self) -> Path:
        return self.agent.state / "cni" / "pluginevent.sock"

    def patch(self, path: str, body: dict) -> None:
        with self.istiod.client() as client:
            response = client.patch(path, json=body, headers={"Content-Type": "application/merge-patch+json"})
            assert response.status_code == 200, response.text

    def label_namespace(self, labels: dict[str, str | None]) -> None:
        """Merge-patch the namespace's labels (None removes one)."""
        self.patch(f"/api/v1/namespaces/{NS}", {"metadata": {"labels": labels}})

    def label_pod(self, pod: str, labels: dict[str, str | None]) -> None:
        self.patch(f"/api/v1/namespaces/{NS}/pods/{pod}", {"metadata": {"labels": labels}})

    def annotated(self, pod: str) -> bool:
        with self.istiod.client() as client:
            body = client.get(f"/api/v1/namespaces/{NS}/pods/{pod}").json()
        return (body["metadata"].get("annotations") or {}).get(ANNOTATION) == "enabled"

    def captured(self, pod: str, net: PodNet) -> bool:
        inode = os.stat(net.path).st_ino
        return self.annotated(pod) and rules_in_sync(net) and self.fake.inode(self.uids[pod]) == inode

    def released(self, pod: str, net: PodNet) -> bool:
        return not self.annotated(pod) and rules_absent(net) and self.fake.inode(self.uids[pod]) is None

    def all_captured(self) -> bool:
        return self.captured("pa", self.a) and self.captured("pb", self.b)


def plugin_exec(
    net: PodNet, pod: str, uid: str, socket_path: Path, command: str = "ADD", hold: bool = False
) -> tuple[int, str, str]:
    """Exec the real istio-cni as the runtime's chain would, after bridge + host-local."""
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": net.path}],
        "ips": [{"interface": 0, "address": f"{net.ip}/24"}],
    }
    config = {"cniVersion": "1.0.0", "name": "mesh", "type": "istio-cni", "agent_socket": str(socket_path),
              "hold": hold, "hold_timeout": 10, "prevResult": prev}  # fmt: skip
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": uid,
        "CNI_NETNS": net.path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"/usr/lib/cni:{harness.VENV_BIN}",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={NS};K8S_POD_NAME={pod};"
        f"K8S_POD_INFRA_CONTAINER_ID={uid};K8S_POD_UID={uid}",
    }
    result = subprocess.run(
        [str(harness.VENV_BIN / "istio-cni")], input=json.dumps(config), env=env, capture_output=True, text=True
    )
    return result.returncode, result.stdout, json.dumps(prev)


def _create(istiod: harness.Istiod, path: str, body: dict) -> dict:
    with istiod.client() as client:
        response = client.post(path, json=body)
        assert response.status_code == 201, response.text
        return response.json()


def _pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {
            "nodeName": NODE,
            "serviceAccountName": "default",
            "containers": [{"name": "app", "command": ["app"]}],
        },
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    need_root()
    harness.need("redis", harness.port_open("127.0.0.1", 6379), "nothing answers on 127.0.0.1:6379")
    tmp = tmp_path_factory.mktemp("agent")
    with harness.running_istiod(tmp, "sqlite") as istiod, pod_pair() as (a, b):
        state = tmp / "node-1"
        state.mkdir(mode=0o700)
        (state / "token").write_text(harness.create_node(istiod, NODE))
        _create(istiod, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        uids = {
            name: _create(istiod, f"/api/v1/namespaces/{NS}/pods", _pod(name))["metadata"]["uid"]
            for name in ("pa", "pb")
        }
        server = b.start_server(PORT)
        agent = Agent(state, istiod)
        fake = FakeZtunnel(state / "ztunnel" / "zds.sock")
        try:
            agent.start()
            fake.start()
            e = Env(istiod, agent, fake, a, b, server, uids)
            for name, net in (("pa", a), ("pb", b)):
                e.add_outputs.append(plugin_exec(net, name, uids[name], e.plugin_socket))
            yield e
        finally:
            fake.stop()
            if agent.proc is not None:
                stop_process(agent.proc)


def ensure_ambient(env: Env) -> None:
    """Start from: namespace ambient, no pod overrides, both pods captured."""
    env.label_pod("pa", {INJECTION: None, MODE: None})
    env.label_pod("pb", {INJECTION: None, MODE: None})
    env.label_namespace({MODE: "ambient", INJECTION: None})
    wait_until(env.all_captured, 5, "both pods captured")


def test_plugin_add_passes_the_result_through_and_leaves_plain_pods_alone(env: Env) -> None:
    for code, out, prev in env.add_outputs:
        assert code == 0
        assert json.loads(out) == json.loads(prev)
    assert rules_absent(env.a) and rules_absent(env.b)
    assert not env.annotated("pa") and not env.annotated("pb")
    env.fake.wait_for(lambda f: f.hellos >= 1, 5, "the fake ztunnel to connect")
    assert not [e for e in env.fake.events if e[0] == "add"]
    assert connect(env.a, env.b.ip, PORT) == f"server {env.server.pid}"


def test_namespace_label_captures_both_pods_within_two_seconds(env: Env) -> None:
    env.label_namespace({MODE: "ambient"})
    elapsed = wait_until(env.all_captured, 5, "rules, annotation and ZDS Add for both pods")
    assert elapsed < 2.0, f"capture took {elapsed:.2f}s"
    pid = env.server.pid
    reply = connect(env.a, env.b.ip, PORT)
    assert reply == f"ztunnel 15001 {env.uids['pa']}", reply
    landed = env.fake.captured.get(timeout=2)
    assert (landed.uid, landed.port, landed.original_dst) == (env.uids["pa"], 15001, (env.b.ip, PORT))
    assert env.server.poll() is None and env.server.pid == pid, "the pod's process kept running"
    info = env.fake.pods[env.uids["pa"]].info
    assert (info.name, info.namespace, info.service_account) == ("pa", NS, "default")


def test_agent_restart_changes_no_rule_and_ztunnel_gets_the_snapshot_again(env: Env) -> None:
    ensure_ambient(env)
    before = {net.name: ruleset_dump(net) for net in (env.a, env.b)}
    hellos = env.fake.hellos
    env.agent.stop()
    env.agent.start()
    env.fake.wait_for(lambda f: f.hellos > hellos and f.events[-1][0] == "snapshot", 10, "a snapshot after reconnect")
    assert env.fake.events[-1] == ("snapshot", ",".join(sorted(env.uids.values())))
    since = env.fake.events[env.fake.events.index(("hello", ""), -4 if len(env.fake.events) >= 4 else 0) :]
    assert sorted(uid for kind, uid in since if kind == "add") == sorted(env.uids.values())
    assert {net.name: ruleset_dump(net) for net in (env.a, env.b)} == before, "rules were rewritten"
    assert env.all_captured()
    # A ztunnel that reconnects on its own also gets the snapshot again.
    hellos = env.fake.hellos
    env.fake.reconnect()
    env.fake.wait_for(lambda f: f.hellos > hellos and f.events[-1][0] == "snapshot", 10, "a snapshot after reconnect")
    assert env.fake.events[-1] == ("snapshot", ",".join(sorted(env.uids.values())))


def test_pod_label_none_opts_out(env: Env) -> None:
    ensure_ambient(env)
    env.label_pod("pa", {MODE: "none"})
    wait_until(lambda: env.released("pa", env.a), 5, "pod A released")
    assert ("del", env.uids["pa"]) in env.fake.events
    assert env.captured("pb", env.b)
    # A's outbound is direct now; B still captures what comes in.
    assert connect(env.a, env.b.ip, PORT) == f"ztunnel 15006 {env.uids['pb']}"
    landed = env.fake.captured.get(timeout=2)
    assert (landed.port, landed.original_dst, landed.peer[0]) == (15006, (env.b.ip, PORT), env.a.ip)
    env.label_pod("pa", {MODE: None})
    wait_until(env.all_captured, 5, "pod A captured again")


def test_istio_injection_excludes_on_the_pod_and_on_the_namespace(env: Env) -> None:
    ensure_ambient(env)
    env.label_pod("pb", {INJECTION: "enabled"})
    wait_until(lambda: env.released("pb", env.b), 5, "pod B released by its injection label")
    assert env.captured("pa", env.a)
    env.label_pod("pb", {INJECTION: None})
    wait_until(env.all_captured, 5, "pod B captured again")
    env.label_namespace({INJECTION: "enabled"})
    wait_until(lambda: env.released("pa", env.a) and env.released("pb", env.b), 5, "both released")
    env.label_namespace({INJECTION: None})
    wait_until(env.all_captured, 5, "both captured again")


def test_removing_the_namespace_label_releases_and_traffic_is_direct(env: Env) -> None:
    ensure_ambient(env)
    env.label_namespace({MODE: None})
    wait_until(lambda: env.released("pa", env.a) and env.released("pb", env.b), 5, "both released")
    assert connect(env.a, env.b.ip, PORT) == f"server {env.server.pid}"
    assert env.server.poll() is None


def test_pod_started_in_an_ambient_namespace_is_captured_before_the_plugin_returns(env: Env) -> None:
    """What a runtime sees: the chain's ADD returns once the pod is captured (hold mode), so the
    pod's first connection is already redirected; deleting the pod tells ztunnel at once."""
    ensure_ambient(env)
    uid = _create(env.istiod, f"/api/v1/namespaces/{NS}/pods", _pod("pc"))["metadata"]["uid"]
    pod_c = PodNet(env.a.name.removesuffix("-a") + "-c", "198.18.241.2")
    try:
        netns.create(pod_c.name)
        code, out, prev = plugin_exec(pod_c, "pc", uid, env.plugin_socket, hold=True)
        assert code == 0 and json.loads(out) == json.loads(prev)
        assert rules_in_sync(pod_c), "captured before ADD returned"
        assert env.fake.inode(uid) == os.stat(pod_c.path).st_ino
        wait_until(lambda: env.annotated("pc"), 5, "pod C annotated")
        with env.istiod.client() as client:
            assert client.delete(f"/api/v1/namespaces/{NS}/pods/pc").status_code == 200
        env.fake.wait_for(lambda f: ("del", uid) in f.events, 5, "ZDS Del for the deleted pod")
        assert plugin_exec(pod_c, "pc", uid, env.plugin_socket, command="DEL")[:2] == (0, "")
    finally:
        netns.delete(pod_c.name)


def test_uninstall_leaves_no_rule_and_no_annotation(env: Env) -> None:
    ensure_ambient(env)
    env.agent.stop()
    assert env.all_captured(), "stopping the agent leaves pods captured"
    result = env.agent.uninstall()
    assert result.returncode == 0, result.stderr
    for name, net in (("pa", env.a), ("pb", env.b)):
        assert rules_absent(net)
        assert not env.annotated(name)
        assert "100" not in subprocess.run(
            ["ip", "-n", net.name, "-4", "rule", "show"], capture_output=True, text=True
        ).stdout.replace("32766", "")
    assert connect(env.a, env.b.ip, PORT) == f"server {env.server.pid}"
    again = env.agent.uninstall()
    assert again.returncode == 0 and '"pods_changed":0' in again.stderr.replace(" ", "")
