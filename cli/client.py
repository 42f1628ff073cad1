"""A small client for istiod's API, configured from a state directory or a kubeconfig."""

from __future__ import annotations

import base64
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from .kubeconfig import KubeconfigError, discover


@dataclass(frozen=True)
class KindInfo:
    """Where a kind lives in the API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def collection(self, namespace: str | None) -> str:
        base = f"/apis/{self.api_version}" if "/" in self.api_version else f"/api/{self.api_version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    @property
    def display(self) -> str:
        group = self.api_version.rpartition("/")[0]
        return f"{self.kind.lower()}.{group}" if group else self.kind.lower()


def client_from_state(state_dir: Path) -> httpx.Client:
    """A client for the istiod that recorded itself in `state_dir`, as its admin."""
    info = discover(state_dir)
    token = Path(info.get("admin_token_file") or state_dir / "admin-token").read_text().strip()
    verify: Any = ssl.create_default_context(cafile=info["ca_file"]) if info.get("ca_file") else True
    return httpx.Client(base_url=info["url"], headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=30)


def client_from_kubeconfig(path: Path) -> httpx.Client:
    """A client from a kubeconfig's current context (token and CA data)."""
    config = yaml.safe_load(path.read_text())
    context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    verify: Any = True
    if "certificate-authority-data" in cluster:
        with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
            f.write(base64.b64decode(cluster["certificate-authority-data"]))
        verify = ssl.create_default_context(cafile=f.name)
    if user.get("token") is None:
        raise KubeconfigError(f"{path}: the current user has no token")
    return httpx.Client(
        base_url=cluster["server"], headers={"Authorization": f"Bearer {user['token']}"}, verify=verify, timeout=30
    )


def discover_kinds(client: httpx.Client) -> dict[tuple[str, str], KindInfo]:
    """Every served kind by (apiVersion, kind), from the legacy discovery documents."""
    kinds: dict[tuple[str, str], KindInfo] = {}
    versions = ["/api/v1"] + [
        f"/apis/{v['groupVersion']}"
        for g in client.get("/apis").raise_for_status().json()["groups"]
        for v in g["versions"]
    ]
    for path in versions:
        doc = client.get(path).raise_for_status().json()
        for r in doc["resources"]:
            if "/" not in r["name"]:
                info = KindInfo(doc["groupVersion"], r["kind"], r["name"], r["namespaced"])
                kinds[(info.api_version, info.kind)] = info
    return kinds
