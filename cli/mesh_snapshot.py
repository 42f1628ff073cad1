"""One read of the mesh's configuration through istiod's API, for the diagnostic commands.

`meshctl analyze`, `x describe` and `x authz check` all look at the objects mesh-xds translates
for ztunnels and waypoints (services/xds/model.py). They list each kind once into a `ConfigStore`, so
the pure generators of mesh-xds (waypoint binding, policy selection, the `Translator` and the
`EnvoyTranslator`) can be run on exactly what the API holds, with no second copy of their rules.
"""

from __future__ import annotations

from typing import Any

import httpx

from mesh.kubeclient import Resource
from mesh.resources.registry import default_registry
from services.xds.model import REFERENCE_GRANTS, WATCHED, ConfigStore

Json = dict[str, Any]

# What the translators read for workloads, services, waypoints, routes and policies: mesh-xds's
# WATCHED kinds, in its order, but for ReferenceGrants. Secrets (which mesh-xds also follows, for
# ingress certificates) are deliberately not read.
KINDS: tuple[str, ...] = tuple(kind for kind in WATCHED if kind != REFERENCE_GRANTS)


class SnapshotError(Exception):
    """The configuration could not be read; the message says what to do."""


def location(kind: str) -> Resource:
    """Where a kind key (`pods`, `security.istio.io/authorizationpolicies`) lives in the API."""
    found = default_registry().by_key(kind)
    if found is None:
        raise SnapshotError(f"unknown kind {kind}")
    return Resource(found.group, found.version, found.plural, found.namespaced)


def _get(client: httpx.Client, path: str) -> httpx.Response:
    try:
        response = client.get(path)
    except httpx.TransportError as e:
        raise SnapshotError(
            f"cannot reach istiod at {client.base_url} ({e or type(e).__name__}): is it running? "
            "pass --state-dir or --kubeconfig to point at it"
        ) from None
    if response.status_code == 401:
        raise SnapshotError(
            "istiod refused the credentials (401 Unauthorized); write a fresh kubeconfig with: "
            "meshctl kubeconfig --state-dir DIR"
        )
    if response.status_code >= 400:
        raise SnapshotError(f"GET {path}: {response.status_code} {response.text[:200]}")
    return response


def load_store(client: httpx.Client, kinds: tuple[str, ...] = KINDS) -> ConfigStore:
    """Every object of `kinds`, listed cluster-wide, in a ConfigStore (as mesh-xds holds them)."""
    store = ConfigStore()
    for kind in kinds:
        body = _get(client, location(kind).path()).json()
        revision = int((body.get("metadata") or {}).get("resourceVersion") or 0)
        store.replace_kind(kind, body.get("items") or [], revision)
    return store


def namespace_of(obj: Json) -> str:
    """An object's namespace ("" for cluster-scoped ones)."""
    return (obj.get("metadata") or {}).get("namespace", "")


def name_of(obj: Json) -> str:
    """An object's name."""
    return (obj.get("metadata") or {}).get("name", "")
