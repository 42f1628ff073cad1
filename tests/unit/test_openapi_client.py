"""Unit tests for tests/openapi_client.py: finding each kind's operations and validating request
bodies from an OpenAPI document alone.

Two sources: a saved fragment of istiod's security.istio.io/v1 document (the AuthorizationPolicy
paths and the schemas they reach, tests/golden/openapi/authorizationpolicy.json), checked against
the live generator so it cannot drift; and every group-version document istiod builds
(services/istiod/api/openapi.py), built in-process exactly as `/openapi/v3/...` serves them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from mesh.resources.registry import default_registry
from services.istiod.api.openapi import OpenAPI
from tests import harness
from tests.e2e import meshops as ops
from tests.openapi_client import KindApi, OpenApiClient, SchemaRejected, kinds_of, to_json_schema

pytestmark = pytest.mark.unit

FRAGMENT = Path(__file__).resolve().parents[1] / "golden" / "openapi" / "authorizationpolicy.json"
AP = ("security.istio.io", "v1", "AuthorizationPolicy")


@pytest.fixture(scope="module")
def fragment() -> dict[str, Any]:
    return json.loads(FRAGMENT.read_text())


@pytest.fixture(scope="module")
def served() -> dict[str, dict[str, Any]]:
    """Every group-version document, as `/openapi/v3/{key}` serves it."""
    return {key: orjson.loads(raw) for key, raw in OpenAPI(default_registry()).by_group_version.items()}


@pytest.fixture(scope="module")
def client(served: dict[str, dict[str, Any]]) -> OpenApiClient:
    return OpenApiClient(httpx.Client(), served)  # never sends in these tests


def policy(spec: Any, name: str = "p") -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "oa"},
        "spec": spec,
    }


def test_the_fragment_is_what_istiod_serves(fragment: dict, served: dict) -> None:
    live = served["apis/security.istio.io/v1"]
    for path, item in fragment["paths"].items():
        assert live["paths"][path] == item, path
    for name, schema in fragment["components"]["schemas"].items():
        assert live["components"]["schemas"][name] == schema, name


def test_operations_are_found_by_group_version_kind(fragment: dict) -> None:
    kinds = kinds_of(fragment)
    assert list(kinds) == [AP]
    api = kinds[AP]
    assert api.collection == "/apis/security.istio.io/v1/namespaces/{namespace}/authorizationpolicies"
    assert api.item == api.collection + "/{name}"  # not the /status subresource
    assert api.schema_ref == "#/components/schemas/AuthorizationPolicy"
    assert api.namespaced and api.api_version == "security.istio.io/v1"
    assert api.path(api.item, "oa", "deny") == "/apis/security.istio.io/v1/namespaces/oa/authorizationpolicies/deny"
    with pytest.raises(ValueError, match="namespaced"):
        api.path(api.collection, None)


@pytest.mark.parametrize(
    "spec",
    [
        {},  # allow-nothing
        None,  # nullable spec
        {"action": "DENY", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/oa/sa/a"]}}]}]},
        {"selector": {"matchLabels": {"app": "s"}}, "action": "ALLOW", "rules": [{"to": [{"operation": {}}]}]},
    ],
)
def test_valid_policies_pass(fragment: dict, spec: Any) -> None:
    assert kinds_of(fragment)[AP].errors(policy(spec)) == []


@pytest.mark.parametrize(
    ("spec", "where", "what"),
    [
        ({"action": "PERMIT"}, "spec.action", "PERMIT"),
        ({"rulez": []}, "spec", "rulez"),  # unknown fields: additionalProperties false
        ({"rules": [{"from": [{"source": {"principals": [3]}}]}]}, "spec.rules.0.from.0.source.principals.0", "string"),
        ({"rules": "all"}, "spec.rules", "array"),
    ],
)
def test_invalid_policies_are_rejected_with_the_field_path(fragment: dict, spec: Any, where: str, what: str) -> None:
    errors = kinds_of(fragment)[AP].errors(policy(spec))
    assert any(e.startswith(f"{where}:") and what in e for e in errors), errors


def test_required_top_level_fields(fragment: dict) -> None:
    body = policy({})
    del body["metadata"]
    assert any("metadata" in e for e in kinds_of(fragment)[AP].errors(body))


def test_openapi_30_dialect_is_rewritten() -> None:
    assert to_json_schema({"type": "string", "nullable": True}) == {"type": ["string", "null"]}
    assert to_json_schema({"type": "string", "enum": ["A"], "nullable": True})["enum"] == ["A", None]
    wrapped = to_json_schema({"allOf": [{"$ref": "#/x"}], "nullable": True})
    assert wrapped == {"if": {"type": "null"}, "else": {"allOf": [{"$ref": "#/x"}]}}
    assert to_json_schema({"type": "integer", "minimum": 0, "exclusiveMinimum": True}) == {
        "type": "integer",
        "exclusiveMinimum": 0,
    }
    assert to_json_schema({"type": "integer", "maximum": 9, "exclusiveMaximum": False}) == {
        "type": "integer",
        "maximum": 9,
    }


def test_every_kind_istiod_serves_has_all_four_operations_and_a_schema(client: OpenApiClient) -> None:
    kinds = {(k.api_version, k.kind) for k in client}
    assert {
        ("v1", "Namespace"),
        ("v1", "Pod"),
        ("v1", "Service"),
        ("security.istio.io/v1", "AuthorizationPolicy"),
        ("security.istio.io/v1", "PeerAuthentication"),
        ("networking.istio.io/v1", "VirtualService"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    } <= kinds
    registry = {(k.api_version, k.kind) for k in default_registry().kinds}
    assert kinds == registry  # every kind istiod knows, found from the documents alone
    for api in client:
        api.errors({})  # every schema compiles (patterns, $refs)


def test_the_bodies_the_e2e_test_sends_are_valid(client: OpenApiClient) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "oa", "labels": {"a": "b"}}}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "server", "namespace": "oa"},
        "spec": {"selector": {"app": "server"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    for body in (namespace, service, ops.app_pod("server", "node-2", "server", "server", "oa"), policy({})):
        assert client.errors(body) == [], body["kind"]
    bad_pod = ops.app_pod("server", "node-2", "server", "server", "oa")
    bad_pod["spec"]["containers"] = []
    assert any(e.startswith("spec.containers:") for e in client.errors(bad_pod))


def test_create_refuses_an_invalid_body_before_sending(served: dict) -> None:
    """Pointed at a port nothing listens on: sending would be a ConnectError, not SchemaRejected."""
    nowhere = httpx.Client(base_url=f"http://127.0.0.1:{harness.free_port()}", timeout=2)
    client = OpenApiClient(nowhere, served)
    with pytest.raises(SchemaRejected) as refused:
        client.create(policy({"action": "PERMIT"}))
    assert any(e.startswith("spec.action:") for e in refused.value.errors)
    with pytest.raises(httpx.ConnectError):  # a valid body is sent
        client.create(policy({}))


def test_an_unknown_kind_is_a_lookup_error(client: OpenApiClient) -> None:
    with pytest.raises(LookupError, match="ConfigMap"):
        client.kind("v1", "ConfigMap")
    assert isinstance(client.kind("v1", "Pod"), KindApi)
