"""Registering a node with istiod and writing what its processes read (docs/cluster.md): the Node
object, its token (mode 0600), `node.json` and the CNI conflist.

Shared by `meshctl cluster up` (nodes as network namespaces) and `mesh-node` (a node as a
container, docs/compose.md), so both write the same files the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .network import ClusterError

TOKEN_ANNOTATION = "mesh.istio.io/node-token"


class RegistrationError(ClusterError):
    """istiod refused to register the node; the message has its answer."""


def node_body(name: str, pod_cidr: str) -> dict[str, Any]:
    """The Node object a node registers itself with."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
    }


def node_info(
    *,
    name: str,
    ip: str,
    pod_cidr: str,
    istiod: str,
    istiod_ca_file: str,
    ca: str,
    xds: str,
    xds_mtls: str,
    root_cert: str,
    netns: str | None = None,
) -> dict[str, str]:
    """The content of `node.json` (docs/cluster.md), which every node process reads; `netns`, the
    node's network namespace where the cluster made one (meshctl reaches ztunnel's admin there)."""
    return {
        "name": name,
        **({"netns": netns} if netns else {}),
        "ip": ip,
        "pod_cidr": pod_cidr,
        "istiod": istiod,
        "istiod_ca_file": istiod_ca_file,
        "ca": ca,
        "xds": xds,
        "xds_mtls": xds_mtls,
        "root_cert": root_cert,
    }


def prepare_node_dir(ndir: Path) -> None:
    """The node directory (0700: it holds the token) and its CNI config directory."""
    (ndir / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    ndir.chmod(0o700)


def write_secret(path: Path, text: str) -> None:
    """Write `text` and a newline with mode 0600 from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def register(client: httpx.Client, name: str, pod_cidr: str, token_file: Path, progress: Callable[[str], None]) -> bool:
    """Create the Node and keep its token in `token_file`, once.

    Nothing is done when the token file exists and the Node too. When the Node exists but its
    token was lost, a new token is issued (the old one stops working). `client` must be allowed to
    create Nodes (the admin token). Returns whether a token was written.
    """
    if token_file.exists() and client.get(f"/api/v1/nodes/{name}").status_code != 404:
        return False
    progress(f"{name}: registering the Node and its token")
    response = client.post("/api/v1/nodes", json=node_body(name, pod_cidr))
    if response.status_code == 409:
        response = client.post(f"/api/v1/nodes/{name}/token")
        token = response.json()["status"]["token"]
    elif response.status_code == 201:
        token = response.json()["metadata"]["annotations"][TOKEN_ANNOTATION]
    else:
        raise RegistrationError(f"registering {name}: {response.status_code} {response.text[:200]}")
    write_secret(token_file, token)
    return True


def write_node_files(ndir: Path, info: dict[str, str], conflist: dict[str, Any]) -> None:
    """`node.json` and the CNI conflist `cni/net.d/10-mesh.conflist`."""
    (ndir / "node.json").write_text(json.dumps(info, indent=2) + "\n")
    (ndir / "cni" / "net.d" / "10-mesh.conflist").write_text(json.dumps(conflist, indent=2))
