"""`meshctl node create|token`: register a Node and keep its token (mode 0600)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

TOKEN_ANNOTATION = "mesh.istio.io/node-token"


class NodeError(Exception):
    """The API refused; the message says why."""


def token_path(state_dir: Path, node: str) -> Path:
    return state_dir / "nodes" / f"{node}.token"


def _save(path: Path, token: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    path.with_suffix(".tmp").replace(path)
    return path


def _error(response: httpx.Response) -> NodeError:
    try:
        return NodeError(f"{response.json().get('reason')}: {response.json().get('message')}")
    except ValueError:
        return NodeError(f"HTTP {response.status_code}")


def create(client: httpx.Client, name: str, out: Path) -> Path:
    """Register the Node and write its token (returned only by this call) to `out`."""
    response = client.post("/api/v1/nodes", json={"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    if response.status_code != 201:
        raise _error(response)
    return _save(out, response.json()["metadata"]["annotations"][TOKEN_ANNOTATION])


def rotate(client: httpx.Client, name: str, out: Path) -> Path:
    """Replace the Node's token (the old one stops working) and write the new one to `out`."""
    response = client.post(f"/api/v1/nodes/{name}/token")
    if response.status_code != 201:
        raise _error(response)
    return _save(out, response.json()["status"]["token"])
