"""mesh-node-agent's settings (flags and environment, `MESH_*`)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, field_validator

from mesh.kubeclient import Connection
from mesh.settings import CommonSettings


class AgentSettings(CommonSettings):
    """Everything mesh-node-agent reads at start-up. `state_dir` is the node's directory
    (`{cluster}/nodes/node-{i}`, docs/cluster.md): the token, node.json and the sockets live there.
    """

    node: str = Field("", description="this node's name (default: `name` in {state-dir}/node.json)")
    istiod: str | None = Field(None, description="istiod's URL (default: `istiod` in {state-dir}/node.json)")
    istiod_ca_file: Path | None = Field(None, description="CA bundle for istiod's certificate (default: node.json)")
    token_file: Path | None = Field(None, description="the node token (default: {state-dir}/token)")
    plugin_socket: Path | None = Field(
        None, description="socket for the istio-cni plugin (default: {state-dir}/cni/pluginevent.sock)"
    )
    zds_socket: Path | None = Field(None, description="ZDS socket for ztunnel (default: {state-dir}/ztunnel/zds.sock)")
    netns_dir: Path = Field(Path("/var/run/netns"), description="where pod netns are named mesh-pod-{uid[:12]}")
    workers: int = Field(8, ge=1, le=64, description="pods captured or released at the same time")
    uninstall: bool = Field(
        False, description="remove every rule and annotation installed on this node's pods, then exit"
    )

    @field_validator("node")
    @classmethod
    def _node_name(cls, value: str) -> str:
        if value and ("/" in value or len(value) > 253):
            raise ValueError("not a valid Node name")
        return value

    def node_info(self) -> dict:
        """`{state-dir}/node.json` as cluster up writes it, or {} when there is none."""
        path = self.state_dir / "node.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def node_name(self) -> str:
        name = self.node or self.node_info().get("name", "")
        if not name:
            raise ValueError("no node name: pass --node or write name into {state-dir}/node.json")
        return name

    def connection(self) -> Connection:
        """How to reach istiod with this node's token."""
        info = self.node_info()
        url = self.istiod or info.get("istiod")
        if not url:
            raise ValueError("no istiod URL: pass --istiod or write istiod into {state-dir}/node.json")
        ca = self.istiod_ca_file or info.get("istiod_ca_file")
        token = (self.token_file or self.state_dir / "token").read_text().strip()
        return Connection(url, token, str(ca) if ca else None)

    def plugin_socket_path(self) -> Path:
        return self.plugin_socket or self.state_dir / "cni" / "pluginevent.sock"

    def zds_socket_path(self) -> Path:
        return self.zds_socket or self.state_dir / "ztunnel" / "zds.sock"

    def pods_file(self) -> Path:
        """The agent's own record of pod netns paths learnt from the plugin (survives restarts)."""
        return self.state_dir / "cni" / "agent-pods.json"

    def runtime_dir(self) -> Path:
        """mesh-runtime's per-pod records (docs/cluster.md), read to find netns of running pods."""
        return self.state_dir / "runtime" / "pods"
