"""`meshctl kubeconfig`: a kubeconfig for istiod that kubectl and the kubernetes client use as is."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import yaml


class KubeconfigError(Exception):
    """The state directory does not have what a kubeconfig needs."""


def discover(state_dir: Path) -> dict[str, Any]:
    """istiod's address, CA file and admin token file, from `{state}/istiod.json`."""
    path = state_dir / "istiod.json"
    if not path.exists():
        raise KubeconfigError(f"{path} not found: start istiod with --state-dir {state_dir} first")
    return json.loads(path.read_text())


def build(server: str, token: str, ca_pem: bytes | None, name: str = "mesh") -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": f"{name}-admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin", "namespace": "default"}}],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(
    state_dir: Path, server: str | None = None, output: Path | None = None, token_file: Path | None = None
) -> Path:
    """Write the kubeconfig (mode 0600: it holds the admin token) and return its path."""
    info = discover(state_dir)
    token_path = token_file or Path(info.get("admin_token_file") or state_dir / "admin-token")
    if not token_path.exists():
        raise KubeconfigError(f"{token_path} not found")
    ca_file = info.get("ca_file")
    ca_pem = Path(ca_file).read_bytes() if ca_file else None
    config = build(server or info["url"], token_path.read_text().strip(), ca_pem)
    out = output or state_dir / "kubeconfig"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    tmp.replace(out)
    return out
