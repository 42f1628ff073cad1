"""OpenAPI v3 documents generated from the kinds' schemas.

Served as `/openapi/v3` (an index of group-versions, what kubectl reads) with one complete
OpenAPI 3.0 document per group-version, and as `/openapi.json` (every group-version merged).
kubectl decides that the server validates fields itself when a `patch` operation carries
`x-kubernetes-group-version-kind` and a `fieldValidation` query parameter, so both are present.
The strategic-merge patch type is deliberately not listed (kubectl would then compute patches
from these schemas instead of its built-in types).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic.json_schema import models_json_schema

from mesh.resources.kind import ResourceKind
from mesh.resources.registry import Registry

from .discovery import SERVER_VERSION

Json = dict[str, Any]
REF = "#/components/schemas/{model}"


def _to_openapi30(node: Any) -> Any:
    """JSON Schema (2020-12, as pydantic writes it) to the OpenAPI 3.0 dialect."""
    if isinstance(node, list):
        return [_to_openapi30(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _to_openapi30(v) for k, v in node.items() if k not in ("title",) or not isinstance(v, str)}
    for branch in ("anyOf", "oneOf"):
        options = node.get(branch)
        if isinstance(options, list) and any(o == {"type": "null"} for o in options):
            rest = [o for o in options if o != {"type": "null"}]
            node.pop(branch)
            if len(rest) == 1:
                inner = rest[0]
                node.update({"allOf": [inner]} if "$ref" in inner else inner)
            else:
                node[branch] = rest
            node["nullable"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[flag] = node.pop(bound)
            node[bound] = True
    if "default" in node and node["default"] is None:
        del node["default"]
    return node


def _gvk(kind: ResourceKind) -> Json:
    return {"group": kind.group, "version": kind.version, "kind": kind.kind}


def _schema_name(kind: ResourceKind) -> str:
    # Set by build_document from pydantic's naming (which disambiguates clashing class names).
    return kind.extra.get("openapi_name", kind.model.__name__)


STATUS_SCHEMA: Json = {
    "type": "object",
    "description": "metav1.Status: the result of an operation that does not return an object, and every error.",
    "properties": {
        "kind": {"type": "string"},
        "apiVersion": {"type": "string"},
        "metadata": {"type": "object"},
        "status": {"type": "string"},
        "message": {"type": "string"},
        "reason": {"type": "string"},
        "details": {"type": "object"},
        "code": {"type": "integer"},
    },
}


def _list_schema(kind: ResourceKind) -> Json:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {
            "kind": {"type": "string"},
            "apiVersion": {"type": "string"},
            "metadata": {
                "type": "object",
                "properties": {"resourceVersion": {"type": "string"}, "continue": {"type": "string"}},
            },
            "items": {"type": "array", "items": {"$ref": REF.format(model=_schema_name(kind))}},
        },
        "x-kubernetes-group-version-kind": [{**_gvk(kind), "kind": kind.kind + "List"}],
    }


def _param(
    name: str, kind: str = "string", where: str = "query", required: bool = False, description: str = ""
) -> Json:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": {"type": kind},
        "uniqueItems": True,
    }


LIST_PARAMS = [
    _param("labelSelector", description="Select objects by label: k=v, k!=v, k in (a,b), k notin (a,b), k, !k"),
    _param(
        "fieldSelector",
        description="Select objects by field: metadata.name, metadata.namespace, and per kind",
    ),
    _param("resourceVersion", description="List consistent with at least this revision"),
    _param("limit", "integer", description="Accepted and ignored: lists are never paginated"),
]
WRITE_PARAMS = [
    _param("dryRun", description="All: validate and return the result without storing it"),
    _param("fieldManager", description="Accepted and recorded nowhere"),
    {
        **_param("fieldValidation", description="Strict (default), Warn or Ignore: what to do with unknown fields"),
        "schema": {"type": "string", "enum": ["Strict", "Warn", "Ignore"]},
    },
]


def _responses(ok: Json, *codes: int) -> Json:
    status = {"application/json": {"schema": {"$ref": REF.format(model="Status")}}}
    out = {str(code): {"description": "OK", "content": {"application/json": {"schema": ok}}} for code in codes}
    for code, text in (
        (400, "BadRequest"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "NotFound"),
        (405, "MethodNotAllowed"),
        (409, "Conflict"),
        (413, "RequestEntityTooLarge"),
        (415, "UnsupportedMediaType"),
        (422, "Invalid"),
    ):
        out[str(code)] = {"description": text, "content": status}
    return out


def _operations(kind: ResourceKind, action_prefix: str) -> tuple[Json, Json, Json | None]:
    """(collection path item, object path item, status path item) for one kind."""
    ref = {"$ref": REF.format(model=_schema_name(kind))}
    list_ref = {"$ref": REF.format(model=_schema_name(kind) + "List")}
    status_ref = {"$ref": REF.format(model="Status")}
    ext = {"x-kubernetes-group-version-kind": _gvk(kind)}
    body = {"required": True, "content": {"application/json": {"schema": ref}}}
    patch_body = {
        "required": True,
        "content": {
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
        },
    }
    op = lambda action, verb, **kw: {  # noqa: E731
        "operationId": f"{verb}{action_prefix}{kind.kind}",
        "tags": [kind.api_version],
        "x-kubernetes-action": action,
        **ext,
        **kw,
    }
    collection = {
        "get": op("list", "list", parameters=LIST_PARAMS, responses=_responses(list_ref, 200)),
        "post": op("post", "create", parameters=WRITE_PARAMS, requestBody=body, responses=_responses(ref, 200, 201)),
        "delete": op(
            "deletecollection",
            "deleteCollection",
            parameters=LIST_PARAMS[:2] + WRITE_PARAMS[:1],
            responses=_responses(status_ref, 200),
        ),
    }
    item = {
        "get": op("get", "read", responses=_responses(ref, 200)),
        "put": op("put", "replace", parameters=WRITE_PARAMS, requestBody=body, responses=_responses(ref, 200)),
        "patch": op(
            "patch",
            "patch",
            parameters=[*WRITE_PARAMS, _param("force", "boolean")],
            requestBody=patch_body,
            responses=_responses(ref, 200),
        ),
        "delete": op("delete", "delete", parameters=WRITE_PARAMS[:1], responses=_responses(ref, 200)),
    }
    status = None
    if kind.status_subresource:
        status = {
            "get": op("get", "read", responses=_responses(ref, 200))
            | {"operationId": f"read{action_prefix}{kind.kind}Status"},
            "put": op("put", "replace", parameters=WRITE_PARAMS, requestBody=body, responses=_responses(ref, 200))
            | {"operationId": f"replace{action_prefix}{kind.kind}Status"},
            "patch": op(
                "patch",
                "patch",
                parameters=WRITE_PARAMS,
                requestBody=patch_body,
                responses=_responses(ref, 200),
            )
            | {"operationId": f"patch{action_prefix}{kind.kind}Status"},
        }
    return collection, item, status


def _paths(kind: ResourceKind) -> Json:
    base = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    ns = {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}
    paths: Json = {}
    if kind.namespaced:
        coll, item, status = _operations(kind, "Namespaced")
        prefix = f"{base}/namespaces/{{namespace}}/{kind.plural}"
        paths[prefix] = {"parameters": [ns], **coll}
        paths[prefix + "/{name}"] = {"parameters": [ns, name], **item}
        if status:
            paths[prefix + "/{name}/status"] = {"parameters": [ns, name], **status}
        all_ns = _operations(kind, "ForAllNamespaces")[0]["get"] | {"operationId": f"list{kind.kind}ForAllNamespaces"}
        paths[f"{base}/{kind.plural}"] = {"get": all_ns}
    else:
        coll, item, status = _operations(kind, "")
        paths[f"{base}/{kind.plural}"] = coll
        paths[f"{base}/{kind.plural}/{{name}}"] = {"parameters": [name], **item}
        if status:
            paths[f"{base}/{kind.plural}/{{name}}/status"] = {"parameters": [name], **status}
    return paths


def build_document(kinds: list[ResourceKind], title: str) -> Json:
    """One OpenAPI 3.0 document covering `kinds`."""
    refs, defs = models_json_schema([(k.model, "validation") for k in kinds], ref_template=REF, by_alias=True)
    for k in kinds:
        k.extra["openapi_name"] = refs[(k.model, "validation")]["$ref"].rsplit("/", 1)[-1]
    schemas = {name: _to_openapi30(s) for name, s in defs.get("$defs", {}).items()}
    for k in kinds:
        schema = schemas[_schema_name(k)]
        schema["x-kubernetes-group-version-kind"] = [_gvk(k)]
        schemas[_schema_name(k) + "List"] = _list_schema(k)
    schemas["Status"] = STATUS_SCHEMA
    paths: Json = {}
    for k in kinds:
        paths.update(_paths(k))
    return {
        "openapi": "3.0.0",
        "info": {"title": title, "version": SERVER_VERSION["gitVersion"]},
        "security": [{"BearerToken": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "http", "scheme": "bearer", "description": "istiod token"}},
        },
    }


class OpenAPI:
    """The documents, built once (the kinds never change while running)."""

    def __init__(self, registry: Registry):
        self.by_group_version: dict[str, bytes] = {}
        for group, versions in registry.group_versions().items():
            for version in versions:
                kinds = list(registry.in_group_version(group, version))
                key = f"apis/{group}/{version}" if group else f"api/{version}"
                self.by_group_version[key] = orjson.dumps(build_document(kinds, f"mesh {key}"))
        self.merged = orjson.dumps(build_document(list(registry.kinds), "mesh istiod API"))

    def index(self) -> Json:
        paths = {}
        for key, doc in self.by_group_version.items():
            digest = hashlib.sha256(doc).hexdigest()[:32].upper()
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
        return {"paths": paths}
