"""mesh-runtime's settings resolved against the node directory of docs/cluster.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataplane.runtime.settings import ConfigError, RuntimeSettings, resolve

pytestmark = pytest.mark.unit


def node_dir(tmp_path: Path, **info: str) -> Path:
    (tmp_path / "node.json").write_text(json.dumps(info))
    (tmp_path / "token").write_text("tok\n")
    return tmp_path


def test_defaults_come_from_the_node_directory(tmp_path: Path) -> None:
    state = node_dir(
        tmp_path, name="node-1", ip="198.19.255.11", istiod="https://198.19.255.1:6443", istiod_ca_file="/x/ca.pem"
    )
    config = resolve(RuntimeSettings(state_dir=state))
    assert (config.node, config.istiod, config.istiod_ca_file, config.token) == (
        "node-1",
        "https://198.19.255.1:6443",
        "/x/ca.pem",
        "tok",
    )
    assert config.node_ip == "198.19.255.11"
    assert config.cni_conf == state / "cni" / "net.d" / "10-mesh.conflist"
    assert config.cni_paths[0] == "/usr/lib/cni" and len(config.cni_paths) == 2
    assert config.records_dir == state / "runtime" / "pods" and config.logs_dir == state / "runtime" / "logs"


def test_flags_win(tmp_path: Path) -> None:
    state = node_dir(tmp_path, name="node-1", istiod="https://a:1")
    config = resolve(
        RuntimeSettings(
            state_dir=state, node="other", istiod="https://b:2", cni_path="/p:/q", cni_conf=tmp_path / "c.conflist"
        )
    )
    assert (config.node, config.istiod, config.cni_paths) == ("other", "https://b:2", ("/p", "/q"))
    assert config.cni_conf == tmp_path / "c.conflist"


@pytest.mark.parametrize(
    ("info", "token", "problem"),
    [
        ({}, True, "no node name"),
        ({"name": "n"}, True, "no istiod URL"),
        ({"name": "n", "istiod": "https://a:1"}, False, "cannot read the node token"),
    ],
)
def test_what_is_missing_is_named(tmp_path: Path, info: dict, token: bool, problem: str) -> None:
    (tmp_path / "node.json").write_text(json.dumps(info))
    if token:
        (tmp_path / "token").write_text("t")
    with pytest.raises(ConfigError, match=problem):
        resolve(RuntimeSettings(state_dir=tmp_path))


def test_cleanup_needs_no_api(tmp_path: Path) -> None:
    (tmp_path / "node.json").write_text(json.dumps({"name": "n"}))
    assert resolve(RuntimeSettings(state_dir=tmp_path), need_api=False).token == ""
