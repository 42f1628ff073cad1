"""mesh-runtime's settings (flags and environment), and the node facts resolved from them.

`RuntimeSettings` is what the user gives; `resolve()` turns it, together with the node directory's
`node.json` and `token` (docs/cluster.md), into a frozen `RuntimeConfig` that the rest of the
process receives. Nothing here runs at import time.
"""

from __future__ import annotations

import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from mesh.settings import CommonSettings

DEBIAN_CNI_DIR = "/usr/lib/cni"


class RuntimeSettings(CommonSettings):
    """Everything mesh-runtime reads at start-up. `--state-dir` is the node's directory."""

    node: str | None = Field(None, description="this node's name (default: `name` in {state-dir}/node.json)")
    istiod: str | None = Field(None, description="istiod's URL (default: `istiod` in {state-dir}/node.json)")
    istiod_ca_file: Path | None = Field(
        None, description="CA bundle for istiod's certificate (default: `istiod_ca_file` in node.json)"
    )
    token_file: Path | None = Field(None, description="the node token (default: {state-dir}/token)")
    cni_conf: Path | None = Field(
        None, description="the CNI conflist (default: {state-dir}/cni/net.d/10-mesh.conflist)"
    )
    cni_path: str | None = Field(
        None,
        description="colon-separated plugin directories (default: /usr/lib/cni and the directory of this "
        "Python's scripts, where istio-cni is)",
    )
    grace_max: float = Field(30.0, ge=0, description="cap on a pod's terminationGracePeriodSeconds (seconds)")
    backoff_base: float = Field(10.0, gt=0, description="first restart back-off of a crashing container (seconds)")
    backoff_max: float = Field(300.0, gt=0, description="longest restart back-off (seconds)")
    backoff_reset: float = Field(600.0, gt=0, description="a container that ran this long restarts without back-off")
    heartbeat_interval: float = Field(10.0, gt=0, description="seconds between Node status heartbeats")
    cni_timeout: float = Field(60.0, gt=0, description="longest one CNI plugin call may take (seconds)")
    ca_address: str | None = Field(
        None, description="mesh-ca host:port for pods' MESH_CA_ADDRESS (default: `ca` in node.json)"
    )
    xds_address: str | None = Field(
        None, description="mesh-xds's mTLS host:port for pods' MESH_XDS_ADDRESS (default: `xds_mtls` in node.json)"
    )
    root_cert: Path | None = Field(
        None, description="the mesh's trust bundle for pods' MESH_ROOT_CERT (default: `root_cert` in node.json)"
    )
    no_pod_tokens: bool = Field(
        False, description="give pods no service-account token (no MESH_TOKEN_FILE), e.g. against an API without one"
    )
    cleanup: bool = Field(
        False, description="tear down every pod in the records (kill, CNI DEL, netns removal) and exit"
    )


@dataclass(frozen=True)
class RuntimeConfig:
    """The resolved settings of one mesh-runtime: where things are and how it behaves."""

    node: str
    state_dir: Path
    istiod: str
    istiod_ca_file: str | None
    token: str
    cni_conf: Path
    cni_paths: tuple[str, ...]
    node_ip: str | None
    grace_max: float
    backoff_base: float
    backoff_max: float
    backoff_reset: float
    heartbeat_interval: float
    cni_timeout: float
    ca_address: str | None = None
    xds_address: str | None = None
    root_cert: str | None = None
    pod_tokens: bool = True

    @property
    def records_dir(self) -> Path:
        return self.state_dir / "runtime" / "pods"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "runtime" / "logs"


class ConfigError(Exception):
    """The settings and the node directory do not add up; the message says what to pass."""


def read_node_json(state_dir: Path) -> dict[str, Any]:
    """`{state}/node.json`, or `{}` when the node directory has none."""
    path = state_dir / "node.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON ({e})") from None


def default_cni_paths() -> tuple[str, ...]:
    """Debian's plugins, then the scripts directory of this Python (where `istio-cni` is installed)."""
    scripts = sysconfig.get_path("scripts")
    return tuple(dict.fromkeys(p for p in (DEBIAN_CNI_DIR, scripts) if p))


def resolve(settings: RuntimeSettings, *, need_api: bool = True) -> RuntimeConfig:
    """Fill the defaults from the node directory; `ConfigError` says what is missing."""
    state = settings.state_dir
    info = read_node_json(state)
    node = settings.node or info.get("name")
    if not node:
        raise ConfigError(f"no node name: pass --node or put `name` in {state / 'node.json'}")
    istiod = settings.istiod or info.get("istiod") or ""
    if need_api and not istiod:
        raise ConfigError(f"no istiod URL: pass --istiod or put `istiod` in {state / 'node.json'}")
    token_file = settings.token_file or state / "token"
    token = ""
    if need_api:
        try:
            token = token_file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read the node token {token_file}: {e.strerror}") from None
    ca_file = settings.istiod_ca_file or info.get("istiod_ca_file")
    paths = tuple(p for p in (settings.cni_path or "").split(":") if p) or default_cni_paths()
    return RuntimeConfig(
        node=node,
        state_dir=state,
        istiod=istiod,
        istiod_ca_file=str(ca_file) if ca_file else None,
        token=token,
        cni_conf=settings.cni_conf or state / "cni" / "net.d" / "10-mesh.conflist",
        cni_paths=paths,
        node_ip=info.get("ip"),
        grace_max=settings.grace_max,
        backoff_base=settings.backoff_base,
        backoff_max=settings.backoff_max,
        backoff_reset=settings.backoff_reset,
        heartbeat_interval=settings.heartbeat_interval,
        cni_timeout=settings.cni_timeout,
        ca_address=settings.ca_address or info.get("ca"),
        xds_address=settings.xds_address or info.get("xds_mtls"),
        root_cert=str(settings.root_cert or info.get("root_cert") or "") or None,
        pod_tokens=not settings.no_pod_tokens,
    )
