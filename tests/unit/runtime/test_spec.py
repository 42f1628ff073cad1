"""Pods as the runtime sees them: argv, environment, probes, and what cannot run here."""

from __future__ import annotations

import pytest

from dataplane.runtime.spec import (
    CONFIG_ERROR,
    NO_COMMAND,
    ProbeSpec,
    container_from_json,
    expand,
    netns_name,
    pod_from_json,
    probe_from_json,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("x-$(A)-$(B)", "x-1-two"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("$(A", "$(A"),
        ("a$b", "a$b"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "two"}) == expected


def test_argv_env_and_working_dir() -> None:
    c = container_from_json(
        "web",
        {
            "name": "app",
            "image": "python:3",
            "command": ["python3", "-m", "http.server"],
            "args": ["$(PORT)"],
            "env": [{"name": "PORT", "value": "8080"}, {"name": "URL", "value": "http://x:$(PORT)/"}],
            "workingDir": "/tmp",
        },
    )
    assert c.argv == ("python3", "-m", "http.server", "8080")
    env = dict(c.env)
    assert env["URL"] == "http://x:8080/" and env["HOSTNAME"] == "web" and "PATH" in env
    assert c.working_dir == "/tmp" and c.problem is None


def test_value_from_is_a_config_error_naming_the_variable() -> None:
    c = container_from_json(
        "p", {"name": "c", "command": ["true"], "env": [{"name": "NODE", "valueFrom": {"fieldRef": {}}}]}
    )
    assert c.problem is not None
    reason, message = c.problem
    assert reason == CONFIG_ERROR and "env[0] NODE" in message and "valueFrom" in message


def test_no_command_is_reported_not_run() -> None:
    c = container_from_json("p", {"name": "c", "image": "nginx", "args": ["-g"]})
    assert c.argv == () and c.problem is not None
    assert c.problem[0] == NO_COMMAND and "nginx" in c.problem[1]


def test_probes() -> None:
    ports = [{"name": "http", "containerPort": 8080}]
    tcp = probe_from_json({"tcpSocket": {"port": "http"}, "periodSeconds": 2, "failureThreshold": 1}, ports)
    assert tcp == ProbeSpec("tcp", port=8080, period=2.0, failure_threshold=1)
    http = probe_from_json(
        {
            "httpGet": {"port": 80, "path": "/healthz", "httpHeaders": [{"name": "X", "value": "y"}]},
            "initialDelaySeconds": 3,
        },
        [],
    )
    assert (http.action, http.port, http.path, http.headers, http.initial_delay) == (
        "http",
        80,
        "/healthz",
        (("X", "y"),),
        3.0,
    )
    ex = probe_from_json({"exec": {"command": ["cat", "/tmp/ok"]}}, [])
    assert ex.command == ("cat", "/tmp/ok") and ex.period == 10.0 and ex.failure_threshold == 3
    with pytest.raises(ValueError, match="grpc"):
        probe_from_json({"grpc": {"port": 1}}, [])
    with pytest.raises(ValueError, match="not the name"):
        probe_from_json({"tcpSocket": {"port": "nope"}}, ports)


def test_bad_probe_is_a_config_error() -> None:
    c = container_from_json("p", {"name": "c", "command": ["x"], "readinessProbe": {"grpc": {"port": 1}}})
    assert c.problem is not None and c.problem[0] == CONFIG_ERROR and "readinessProbe" in c.problem[1]


def test_pod_from_json_defaults() -> None:
    pod = pod_from_json(
        {
            "metadata": {"uid": "0b7c2f1e-1111-2222-3333-444455556666", "namespace": "ns", "name": "web"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "a", "command": ["true"]}]},
        }
    )
    assert (pod.restart_policy, pod.grace_seconds, pod.phase) == ("Always", 30.0, "Pending")
    assert pod.netns_name == "mesh-pod-0b7c2f1e1111" == netns_name(pod.uid)
    assert pod.full_name == "ns/web" and pod.containers[0].argv == ("true",)
    zero = pod_from_json(
        {"metadata": {"uid": "u", "name": "x"}, "spec": {"terminationGracePeriodSeconds": 0, "containers": []}}
    )
    assert zero.grace_seconds == 0.0 and zero.namespace == "default"
