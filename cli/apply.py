"""`meshctl apply -f`: create or update objects from YAML, as `kubectl apply` reports them.

For machines without kubectl. Objects that exist are merge-patched with the manifest; the
result is "unchanged" when the server's resourceVersion did not move.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from .client import KindInfo, discover_kinds


class ApplyError(Exception):
    """A manifest could not be applied; the message says which and why."""


def manifests(paths: list[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every YAML document in the files (directories: their *.yaml / *.yml / *.json, sorted)."""
    for path in paths:
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json")) if path.is_dir() else [path]
        for file in files:
            for doc in yaml.safe_load_all(file.read_text()):
                if doc:
                    yield file, doc


def apply_one(client: httpx.Client, info: KindInfo, doc: dict[str, Any], namespace: str) -> str:
    name = (doc.get("metadata") or {}).get("name")
    if not name:
        raise ApplyError(f"{info.kind} without metadata.name")
    ns = (doc.get("metadata") or {}).get("namespace") or namespace
    url = f"{info.collection(ns if info.namespaced else None)}/{name}"
    current = client.get(url)
    if current.status_code == 404:
        response = client.post(info.collection(ns if info.namespaced else None), json=doc)
        verb = "created"
    else:
        response = client.patch(url, json=doc, headers={"Content-Type": "application/merge-patch+json"})
        verb = "configured"
        if response.status_code == 200 and current.status_code == 200:
            before = current.json()["metadata"]["resourceVersion"]
            if response.json()["metadata"]["resourceVersion"] == before:
                verb = "unchanged"
    if response.status_code >= 400:
        message = (
            response.json().get("message", response.text)
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text
        )
        raise ApplyError(f"Error from server ({response.json().get('reason', response.status_code)}): {message}")
    return f"{info.display}/{name} {verb}"


def apply(client: httpx.Client, paths: list[Path], namespace: str = "default") -> list[str]:
    """Apply every manifest; returns kubectl-style lines. Stops at the first error."""
    kinds = discover_kinds(client)
    out = []
    for file, doc in manifests(paths):
        info = kinds.get((doc.get("apiVersion", ""), doc.get("kind", "")))
        if info is None:
            raise ApplyError(f'{file}: no kind "{doc.get("kind")}" in version "{doc.get("apiVersion")}"')
        out.append(apply_one(client, info, doc, namespace))
    return out
