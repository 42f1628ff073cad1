"""API discovery: `/api`, `/apis` (aggregated v2 and legacy forms), `/api/v1`, `/apis/{g}/{v}`, `/version`.

kubectl prefers the aggregated form and then makes no per-group calls; the Python client and
older tools use the legacy lists. Both are generated from the registry.
"""

from __future__ import annotations

from typing import Any

from mesh.resources.kind import ResourceKind
from mesh.resources.registry import Registry

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
STATUS_VERBS = ["get", "patch", "update"]
# Subresources answered with another kind: a ServiceAccount's `token` takes and returns a TokenRequest.
TOKEN_REQUEST = {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}
KIND_SUBRESOURCES = {"serviceaccounts": ("token", TOKEN_REQUEST, ["create"])}
SERVER_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-mesh.0.1.0", "platform": "linux/amd64"}


def version_info() -> dict[str, Any]:
    return {
        **SERVER_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "python",
        "compiler": "cpython",
    }


def _aggregated_resource(k: ResourceKind) -> dict[str, Any]:
    gvk = {"group": k.group, "version": k.version, "kind": k.kind}
    out: dict[str, Any] = {
        "resource": k.plural,
        "singularResource": k.singular,
        "scope": "Namespaced" if k.namespaced else "Cluster",
        "responseKind": gvk,
        "verbs": VERBS,
    }
    if k.short_names:
        out["shortNames"] = list(k.short_names)
    if k.categories:
        out["categories"] = list(k.categories)
    subresources = []
    if k.status_subresource:
        subresources.append({"subresource": "status", "responseKind": gvk, "verbs": STATUS_VERBS})
    if k.key in KIND_SUBRESOURCES:
        name, response_kind, verbs = KIND_SUBRESOURCES[k.key]
        subresources.append({"subresource": name, "responseKind": response_kind, "verbs": verbs})
    if subresources:
        out["subresources"] = subresources
    return out


def aggregated(registry: Registry, core: bool) -> dict[str, Any]:
    """`APIGroupDiscoveryList` for `/api` (core) or `/apis` (named groups)."""
    items = []
    for group, versions in registry.group_versions().items():
        if (group == "") != core:
            continue
        item: dict[str, Any] = {"metadata": {"name": group} if group else {}, "versions": []}
        for version in versions:
            resources = [_aggregated_resource(k) for k in registry.in_group_version(group, version)]
            item["versions"].append({"version": version, "resources": resources, "freshness": "Current"})
        items.append(item)
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def api_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = []
    for group, versions in registry.group_versions().items():
        if not group:
            continue
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    for g in api_group_list(registry)["groups"]:
        if g["name"] == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **g}
    return None


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    """Legacy `APIResourceList` for one group-version, or None when it is not served."""
    kinds = list(registry.in_group_version(group, version))
    if not kinds:
        return None
    resources: list[dict[str, Any]] = []
    for k in kinds:
        entry: dict[str, Any] = {
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": VERBS,
        }
        if k.short_names:
            entry["shortNames"] = list(k.short_names)
        if k.categories:
            entry["categories"] = list(k.categories)
        resources.append(entry)
        if k.status_subresource:
            resources.append(
                {
                    "name": f"{k.plural}/status",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": STATUS_VERBS,
                }
            )
        if k.key in KIND_SUBRESOURCES:
            name, response_kind, verbs = KIND_SUBRESOURCES[k.key]
            resources.append(
                {
                    "name": f"{k.plural}/{name}",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "group": response_kind["group"],
                    "version": response_kind["version"],
                    "kind": response_kind["kind"],
                    "verbs": verbs,
                }
            )
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }
