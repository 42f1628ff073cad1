"""The istio-cni plugin's configuration and result handling, against a fake agent socket."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataplane.cni import plugin
from dataplane.cni.events import AgentReply, PluginEvent
from tests.fakes.fake_cni_agent import FakeAgent

PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/var/run/netns/p"}],
    "ips": [{"interface": 2, "address": "198.18.1.2/24", "gateway": "198.18.1.1"}],
    "routes": [{"dst": "198.18.0.0/15", "gw": "198.18.1.1"}],
    "dns": {},
}
ENV = {
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/var/run/netns/p",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/usr/lib/cni",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web;"
    "K8S_POD_INFRA_CONTAINER_ID=u-1;K8S_POD_UID=u-1",
}


@pytest.fixture
def agent_path(tmp_path: Path) -> Path:
    return tmp_path / "pluginevent.sock"


@pytest.fixture
def agent(agent_path: Path) -> Iterator[FakeAgent]:
    fake = FakeAgent(agent_path, AgentReply(ok=True, enrolled=True, captured=True))
    yield fake
    fake.close()


def conf(agent_path: Path, **extra) -> str:
    body = {
        "cniVersion": "1.0.0",
        "name": "mesh",
        "type": "istio-cni",
        "agent_socket": str(agent_path),
        "prevResult": PREV,
        **extra,
    }
    return json.dumps(body)


def run(command: str, stdin: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    return plugin.run({**ENV, **(env or {}), "CNI_COMMAND": command}, stdin)


def test_version_lists_supported_versions() -> None:
    code, out = run("VERSION", json.dumps({"cniVersion": "0.4.0"}))
    assert code == 0
    assert json.loads(out) == {"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]}
    assert run("VERSION", "")[0] == 0


def test_add_tells_the_agent_and_echoes_prev_result(agent: FakeAgent, agent_path: Path) -> None:
    code, out = run("ADD", conf(agent_path, cniVersion="0.4.0"))
    assert code == 0
    assert json.loads(out) == {**PREV, "cniVersion": "0.4.0"}
    [event] = agent.events
    assert event == PluginEvent(
        event="ADD",
        pod_namespace="demo",
        pod_name="web",
        pod_uid="u-1",
        container_id="c0ffee",
        netns="/var/run/netns/p",
        ips=("198.18.1.2",),
        wait=10.0,
    )


def test_del_and_check_print_nothing(agent: FakeAgent, agent_path: Path) -> None:
    assert run("DEL", conf(agent_path)) == (0, "")
    assert run("CHECK", conf(agent_path)) == (0, "")
    assert [e.event for e in agent.events] == ["DEL"]


def test_agent_down_never_fails_a_pod(agent_path: Path) -> None:
    code, out = run("ADD", conf(agent_path))
    assert code == 0 and json.loads(out)["ips"] == PREV["ips"]
    code, out = run("ADD", conf(agent_path, hold=True, hold_timeout=0.2))
    assert code == 0, "unreachable agent: the pod goes on even in hold mode"
    assert run("DEL", conf(agent_path)) == (0, "")


@pytest.mark.parametrize(
    ("reply", "hold", "fails"),
    [
        (AgentReply(ok=True, enrolled=True, captured=False), True, True),
        (AgentReply(ok=True, enrolled=True, captured=False), False, False),
        (AgentReply(ok=True, enrolled=False, captured=False), True, False),
        (AgentReply(ok=True, enrolled=True, captured=True), True, False),
        (AgentReply(ok=False, error="boom"), True, False),
        (b"not json", True, False),
    ],
)
def test_hold_mode(agent_path: Path, reply: AgentReply | bytes, hold: bool, fails: bool) -> None:
    fake = FakeAgent(agent_path, reply)
    try:
        code, out = run("ADD", conf(agent_path, hold=hold, hold_timeout=3))
    finally:
        fake.close()
    if fails:
        assert code == 1
        error = json.loads(out)
        assert error["code"] == plugin.ERR_TRY_AGAIN_LATER and "demo/web" in error["msg"]
        assert fake.events[0].wait == 3.0
    else:
        assert code == 0 and json.loads(out)["cniVersion"] == "1.0.0"


@pytest.mark.parametrize(
    ("stdin", "env", "code"),
    [
        ("{not json", {}, plugin.ERR_DECODE),
        (json.dumps({"cniVersion": "9.9.9", "prevResult": PREV}), {}, plugin.ERR_INCOMPATIBLE_VERSION),
        (json.dumps({"cniVersion": "1.0.0", "agent_socket": "/x"}), {}, plugin.ERR_INVALID_CONFIG),  # no prevResult
        (json.dumps({"cniVersion": "1.0.0", "prevResult": PREV}), {}, plugin.ERR_INVALID_CONFIG),  # no agent_socket
        (
            json.dumps({"cniVersion": "1.0.0", "prevResult": PREV, "agent_socket": "/x"}),
            {"CNI_NETNS": ""},
            plugin.ERR_INVALID_ENV,
        ),
        (
            json.dumps({"cniVersion": "1.0.0", "prevResult": PREV, "agent_socket": "/x", "hold_timeout": "soon"}),
            {},
            plugin.ERR_INVALID_CONFIG,
        ),
    ],
)
def test_add_errors_use_the_cni_error_format(stdin: str, env: dict[str, str], code: int) -> None:
    exit_code, out = run("ADD", stdin, env)
    assert exit_code == 1
    body = json.loads(out)
    assert body["code"] == code and body["msg"] and body["cniVersion"]


def test_unknown_command_and_del_tolerance() -> None:
    assert json.loads(run("FROB", "{}")[1])["code"] == plugin.ERR_INVALID_ENV
    assert run("DEL", "{broken") == (0, ""), "DEL never blocks teardown"


def test_not_a_kubernetes_pod_is_passed_through(agent: FakeAgent, agent_path: Path) -> None:
    code, out = run("ADD", conf(agent_path), {"CNI_ARGS": "IgnoreUnknown=1"})
    assert code == 0 and json.loads(out)["ips"] == PREV["ips"]
    assert agent.events == []


def test_parse_cni_args() -> None:
    assert plugin.parse_cni_args("A=1; B = two ;junk;=x") == {"A": "1", "B": "two"}


def test_console_script_imports_little(tmp_path: Path) -> None:
    """Exec'd per pod: the plugin must not drag in the agent's dependencies."""
    probe = (
        "import sys, dataplane.cni.plugin; "
        "print(sorted(m for m in ('httpx','pydantic','google.protobuf','mesh') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
