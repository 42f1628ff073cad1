"""`meshctl x cert` and `x xds-config` on a `meshctl cluster up` node: its token and addresses are
found in the node's directory, so a user names only the node."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.__main__ import _node_address, _node_token


def _state(tmp_path: Path) -> Path:
    node = tmp_path / "nodes" / "node-1"
    node.mkdir(parents=True)
    (node / "token").write_text("tok-1\n")
    (node / "node.json").write_text(json.dumps({"xds": "198.19.255.1:15010", "ca": "198.19.255.1:15012"}))
    return tmp_path


def test_a_cluster_nodes_token_and_addresses_come_from_its_directory(tmp_path: Path) -> None:
    state = _state(tmp_path)
    args = argparse.Namespace(node="node-1", token_file=None)
    assert _node_token(args, state) == "tok-1"
    assert _node_address(args, state, "xds", None, "127.0.0.1:15010") == "198.19.255.1:15010"
    assert _node_address(args, state, "ca", "10.0.0.1:1", "127.0.0.1:15012") == "10.0.0.1:1"  # a flag wins


def test_a_node_without_a_directory_gets_the_defaults_and_a_hint(tmp_path: Path, capsys) -> None:
    args = argparse.Namespace(node="node-9", token_file=None)
    assert _node_address(args, tmp_path, "xds", None, "127.0.0.1:15010") == "127.0.0.1:15010"
    assert _node_token(args, tmp_path) is None
    assert "meshctl node create node-9" in capsys.readouterr().err
