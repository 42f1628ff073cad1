"""Unit tests for services.istiod.api.discovery and openapi: what clients learn about the API.

kubectl builds its resource map from aggregated discovery (scope, verbs, short names, the
status subresource) and decides from the OpenAPI documents whether the server validates fields
(`x-kubernetes-group-version-kind` and a `fieldValidation` parameter on `patch`). A `$ref` that
points nowhere or an OpenAPI 3.1-only construct breaks client generators and schemathesis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from mesh.resources.kind import ResourceKind
from mesh.resources.registry import Registry, default_registry
from services.istiod.api import discovery
from services.istiod.api.openapi import OpenAPI

pytestmark = pytest.mark.unit

REGISTRY: Registry = default_registry()
KINDS: tuple[ResourceKind, ...] = REGISTRY.kinds
STRATEGIC = "application/strategic-merge-patch+json"


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI(REGISTRY)


@pytest.fixture(scope="module")
def documents(openapi: OpenAPI) -> dict[str, Any]:
    """Every served document: one per group-version, plus the merged `/openapi.json`."""
    docs = {key: orjson.loads(raw) for key, raw in openapi.by_group_version.items()}
    docs["merged"] = orjson.loads(openapi.merged)
    return docs


def gv_key(kind: ResourceKind) -> str:
    return f"apis/{kind.group}/{kind.version}" if kind.group else f"api/{kind.version}"


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict inside `node`, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# --- discovery -----------------------------------------------------------------------------------


def aggregated_resources() -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for core in (True, False):
        doc = discovery.aggregated(REGISTRY, core)
        assert (doc["kind"], doc["apiVersion"]) == ("APIGroupDiscoveryList", "apidiscovery.k8s.io/v2")
        for item in doc["items"]:
            group = item["metadata"].get("name", "")
            assert (group == "") == core  # /api holds the core group only, /apis the others
            for version in item["versions"]:
                for res in version["resources"]:
                    out[(group, version["version"], res["resource"])] = res
    return out


def test_aggregated_discovery_lists_every_kind_with_scope_verbs_and_short_names() -> None:
    resources = aggregated_resources()
    assert set(resources) == {(k.group, k.version, k.plural) for k in KINDS}
    for k in KINDS:
        res = resources[(k.group, k.version, k.plural)]
        assert res["scope"] == ("Namespaced" if k.namespaced else "Cluster"), k.kind
        assert res["responseKind"] == {"group": k.group, "version": k.version, "kind": k.kind}
        assert res["singularResource"] == k.kind.lower()
        assert set(res["verbs"]) >= {"get", "list", "watch", "create", "update", "patch", "delete"}
        assert res.get("shortNames", []) == list(k.short_names)


def test_aggregated_discovery_has_a_status_subresource_exactly_where_the_kind_has_one() -> None:
    resources = aggregated_resources()
    for k in KINDS:
        subresources = resources[(k.group, k.version, k.plural)].get("subresources", [])
        status = [s for s in subresources if s["subresource"] == "status"]
        if k.status_subresource:
            assert len(status) == 1, k.kind
            assert set(status[0]["verbs"]) == {"get", "patch", "update"}
        else:
            assert status == [], k.kind


def test_a_service_accounts_token_subresource_is_discoverable() -> None:
    """kubectl create token posts a TokenRequest to serviceaccounts/token."""
    resources = aggregated_resources()
    for k in KINDS:
        tokens = [
            s for s in resources[(k.group, k.version, k.plural)].get("subresources", []) if s["subresource"] == "token"
        ]
        if k.plural == "serviceaccounts":
            assert tokens == [
                {
                    "subresource": "token",
                    "responseKind": {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"},
                    "verbs": ["create"],
                }
            ]
        else:
            assert tokens == [], k.kind


def test_short_names_kubectl_users_type_are_served() -> None:
    short = {
        name: plural for (_, _, plural), res in aggregated_resources().items() for name in res.get("shortNames", [])
    }
    for name, plural in [("ns", "namespaces"), ("po", "pods"), ("svc", "services"), ("sa", "serviceaccounts")]:
        assert short[name] == plural
    assert short["ap"] == "authorizationpolicies"
    assert len(short) == sum(len(k.short_names) for k in KINDS)  # no short name is used twice


def test_legacy_resource_list_of_core_v1_has_pods_and_pods_status() -> None:
    doc = discovery.resource_list(REGISTRY, "", "v1")
    assert doc is not None
    assert (doc["kind"], doc["groupVersion"]) == ("APIResourceList", "v1")
    by_name = {r["name"]: r for r in doc["resources"]}
    assert by_name["pods"]["namespaced"] is True
    assert by_name["pods"]["kind"] == "Pod"
    assert by_name["pods/status"]["kind"] == "Pod"
    assert set(by_name["pods/status"]["verbs"]) == {"get", "patch", "update"}
    assert "serviceaccounts/status" not in by_name
    assert by_name["namespaces"]["namespaced"] is False


def test_legacy_lists_cover_every_group_version_and_nothing_else() -> None:
    for group, versions in REGISTRY.group_versions().items():
        for version in versions:
            doc = discovery.resource_list(REGISTRY, group, version)
            assert doc is not None
            assert doc["groupVersion"] == (f"{group}/{version}" if group else version)
            names = {r["name"] for r in doc["resources"]}
            assert names >= {k.plural for k in REGISTRY.in_group_version(group, version)}
    assert discovery.resource_list(REGISTRY, "security.istio.io", "v1beta9") is None
    assert discovery.resource_list(REGISTRY, "apps", "v1") is None


def test_api_group_list_names_every_named_group_with_a_preferred_version() -> None:
    groups = {g["name"]: g for g in discovery.api_group_list(REGISTRY)["groups"]}
    assert set(groups) == {k.group for k in KINDS if k.group}
    for name, group in groups.items():
        assert group["preferredVersion"] in group["versions"]
        assert all(v["groupVersion"] == f"{name}/{v['version']}" for v in group["versions"])
    assert discovery.api_group(REGISTRY, "security.istio.io")["kind"] == "APIGroup"  # type: ignore[index]
    assert discovery.api_group(REGISTRY, "apps") is None


# --- OpenAPI -------------------------------------------------------------------------------------


def test_openapi_index_lists_every_group_version(openapi: OpenAPI) -> None:
    paths = openapi.index()["paths"]
    assert set(paths) == {gv_key(k) for k in KINDS}
    for key, entry in paths.items():
        assert entry["serverRelativeURL"].startswith(f"/openapi/v3/{key}?hash=")


def test_openapi_hash_changes_with_the_document(openapi: OpenAPI) -> None:
    # kubectl caches documents by this URL, so the hash must be of the content.
    urls = {entry["serverRelativeURL"].split("hash=")[1] for entry in openapi.index()["paths"].values()}
    assert len(urls) == len(openapi.by_group_version)
    assert openapi.index() == OpenAPI(REGISTRY).index()


def patch_operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        if "patch" in item:
            yield path, item["patch"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_patch_operation_tells_kubectl_the_server_validates_fields(
    documents: dict[str, Any], kind: ResourceKind
) -> None:
    doc = documents[gv_key(kind)]
    base = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    scope = "/namespaces/{namespace}" if kind.namespaced else ""
    object_path = f"{base}{scope}/{kind.plural}/{{name}}"
    paths = [object_path] + ([object_path + "/status"] if kind.status_subresource else [])
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    for path in paths:
        patch = doc["paths"][path]["patch"]
        assert patch["x-kubernetes-group-version-kind"] == gvk, path
        assert "fieldValidation" in [p["name"] for p in patch["parameters"]], path
        content = patch["requestBody"]["content"]
        assert STRATEGIC not in content, path
        assert {"application/merge-patch+json", "application/json-patch+json"} <= set(content), path


def test_no_patch_operation_anywhere_offers_strategic_merge(documents: dict[str, Any]) -> None:
    for name, doc in documents.items():
        for path, patch in patch_operations(doc):
            assert STRATEGIC not in patch["requestBody"]["content"], (name, path)


@pytest.mark.parametrize("name", [*sorted({gv_key(k) for k in KINDS}), "merged"])
def test_every_ref_resolves_to_a_schema(documents: dict[str, Any], name: str) -> None:
    doc = documents[name]
    schemas = doc["components"]["schemas"]
    refs = [node["$ref"] for node in walk(doc) if isinstance(node.get("$ref"), str)]
    assert refs
    prefix = "#/components/schemas/"
    for ref in refs:
        assert ref.startswith(prefix), ref
        assert ref[len(prefix) :] in schemas, ref


@pytest.mark.parametrize("name", [*sorted({gv_key(k) for k in KINDS}), "merged"])
def test_schemas_are_openapi_3_0(documents: dict[str, Any], name: str) -> None:
    doc = documents[name]
    assert doc["openapi"].startswith("3.0")
    for node in walk(doc["components"]["schemas"]):
        assert node.get("type") != "null", node
        assert not isinstance(node.get("type"), list), node  # 3.1 type arrays
        assert "const" not in node, node
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, False), bool), node  # 3.0: a flag beside minimum


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_each_kind_schema_carries_its_gvk(documents: dict[str, Any], kind: ResourceKind) -> None:
    doc = documents[gv_key(kind)]
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    tagged = [s for s in doc["components"]["schemas"].values() if gvk in s.get("x-kubernetes-group-version-kind", [])]
    assert len(tagged) == 1
    assert "metadata" in tagged[0]["properties"]
