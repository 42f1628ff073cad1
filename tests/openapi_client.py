"""A small API client driven by istiod's own OpenAPI v3 documents, for tests.

It knows nothing of the kinds in advance. `OpenApiClient.discover` reads the discovery index
`/openapi/v3` and every group-version document it lists (as kubectl does); each kind's create,
get, list and delete operations are found from the paths by their `x-kubernetes-group-version-kind`
and `x-kubernetes-action` extensions, and each request body is validated, before it is sent,
against the kind's component schema from that same document (`$ref`s resolved within it).

The documents are OpenAPI 3.0, whose schema dialect is not JSON Schema: `nullable` and the
boolean `exclusiveMinimum`/`exclusiveMaximum` are rewritten into JSON Schema 2020-12 (`to_json_schema`)
before a validator (jsonschema_rs, or jsonschema where that is what is installed) is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

Json = dict[str, Any]
DIALECT = "https://json-schema.org/draft/2020-12/schema"


class SchemaRejected(ValueError):
    """The body does not match the kind's schema; nothing was sent."""

    def __init__(self, kind: str, errors: list[str]):
        super().__init__(f"{kind}: {'; '.join(errors)}")
        self.errors = errors


class ApiError(RuntimeError):
    """istiod answered with an error Status."""

    def __init__(self, response: httpx.Response):
        try:
            status = response.json()
        except ValueError:
            status = {"message": response.text}
        super().__init__(f"{response.request.method} {response.request.url.path}: {response.status_code} {status}")
        self.code = response.status_code
        self.status = status


# --- OpenAPI 3.0 schema → JSON Schema 2020-12 -------------------------------------------------------


def to_json_schema(node: Any) -> Any:
    """Rewrite the OpenAPI 3.0 schema dialect into JSON Schema 2020-12 (OpenAPI 3.0 §4.7.24):
    `nullable: true` admits null; a boolean `exclusiveMinimum` turns `minimum` exclusive."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items()}
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(flag), bool):
            exclusive = out.pop(flag)
            if exclusive and bound in out:
                out[flag] = out.pop(bound)
    if out.pop("nullable", False):
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        elif kind is None:  # a $ref or allOf wrapper: null, or what it says (errors from inside it)
            out = {"if": {"type": "null"}, "else": out}
    return out


def _validator(schema: Json) -> Any:
    """A validator for `schema` with an `iter_errors(instance)` yielding (path, message)."""
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - whichever of the two is installed
        import jsonschema

        inner = jsonschema.Draft202012Validator(schema)
        return _Errors(lambda i: ((list(e.absolute_path), e.message) for e in inner.iter_errors(i)))
    inner = jsonschema_rs.validator_for(schema)
    return _Errors(lambda i: ((list(e.instance_path), e.message) for e in inner.iter_errors(i)))


@dataclass(frozen=True)
class _Errors:
    iter_errors: Any


# --- the operations of one kind ----------------------------------------------------------------------


@dataclass
class KindApi:
    """Where one kind's operations live, and its request-body schema, as the document says."""

    group: str
    version: str
    kind: str
    document: Json = field(repr=False)
    collection: str = ""  # the path template with `post` (create) and `get` (list)
    item: str = ""  # the path template with `get` (read) and `delete`
    schema_ref: str = ""  # "#/components/schemas/…" of the create body
    _validator: Any = field(default=None, repr=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def namespaced(self) -> bool:
        return "{namespace}" in self.collection

    def errors(self, body: Json) -> list[str]:
        """Every way `body` breaks the schema, as `path: message`; empty when it is valid."""
        if self._validator is None:
            components = to_json_schema(self.document.get("components", {}))
            self._validator = _validator({"$schema": DIALECT, "$ref": self.schema_ref, "components": components})
        return [
            f"{'.'.join(str(p) for p in path) or '(root)'}: {message}"
            for path, message in self._validator.iter_errors(body)
        ]

    def path(self, template: str, namespace: str | None, name: str | None = None) -> str:
        if self.namespaced and not namespace:
            raise ValueError(f"{self.kind} is namespaced: give a namespace")
        return template.replace("{namespace}", namespace or "").replace("{name}", name or "")


def _gvk(operation: Json) -> tuple[str, str, str] | None:
    gvk = operation.get("x-kubernetes-group-version-kind")
    if isinstance(gvk, list):  # schemas carry a list; operations one object
        gvk = gvk[0] if gvk else None
    if not isinstance(gvk, dict):
        return None
    return gvk.get("group", ""), gvk["version"], gvk["kind"]


def kinds_of(document: Json) -> dict[tuple[str, str, str], KindApi]:
    """Every kind with create, list, get and delete in `document`, keyed by (group, version, kind).

    The collection path is the one whose `post` creates the kind (for namespaced kinds the
    `…/namespaces/{namespace}/…` one, not the all-namespaces list); the item path is the one
    under it whose `get` reads a single object (not its `/status` subresource)."""
    found: dict[tuple[str, str, str], KindApi] = {}
    for path, item in document.get("paths", {}).items():
        post = item.get("post")
        if not post or post.get("x-kubernetes-action") != "post" or (gvk := _gvk(post)) is None:
            continue
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        found[gvk] = KindApi(*gvk, document=document, collection=path, schema_ref=schema["$ref"])
    for path, item in document.get("paths", {}).items():
        read = item.get("get")
        if not read or read.get("x-kubernetes-action") != "get" or (gvk := _gvk(read)) not in found:
            continue
        api = found[gvk]
        one_below = path.startswith(api.collection + "/") and path.count("/") == api.collection.count("/") + 1
        if one_below and "delete" in item:
            api.item = path
    return {gvk: api for gvk, api in found.items() if api.item and "get" in document["paths"][api.collection]}


# --- the client --------------------------------------------------------------------------------------


class OpenApiClient:
    """create / get / list / delete of any kind the documents describe, over `http` (an
    httpx.Client with istiod's base URL and a token)."""

    def __init__(self, http: httpx.Client, documents: dict[str, Json]):
        self.http = http
        self.documents = documents
        self.kinds: dict[tuple[str, str, str], KindApi] = {}
        for document in documents.values():
            self.kinds.update(kinds_of(document))

    @classmethod
    def discover(cls, http: httpx.Client) -> OpenApiClient:
        """Read `/openapi/v3` and every group-version document it lists."""
        index = cls._checked(http.get("/openapi/v3")).json()
        documents = {
            key: cls._checked(http.get(entry["serverRelativeURL"])).json() for key, entry in index["paths"].items()
        }
        return cls(http, documents)

    def kind(self, api_version: str, kind: str) -> KindApi:
        group, _, version = api_version.rpartition("/")
        try:
            return self.kinds[(group, version, kind)]
        except KeyError:
            raise LookupError(f"the API documents describe no {kind} in {api_version}") from None

    def errors(self, body: Json) -> list[str]:
        return self.kind(body["apiVersion"], body["kind"]).errors(body)

    def create(self, body: Json, *, validate: bool = True, namespace: str | None = None) -> Json:
        """POST `body` to its kind's collection; with `validate`, refuse (SchemaRejected) a body the
        schema rejects without sending it."""
        api = self.kind(body["apiVersion"], body["kind"])
        if validate and (errors := api.errors(body)):
            raise SchemaRejected(f"{body['kind']} {body.get('metadata', {}).get('name')}", errors)
        namespace = namespace or body.get("metadata", {}).get("namespace")
        return self._checked(self.http.post(api.path(api.collection, namespace), json=body)).json()

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Json:
        api = self.kind(api_version, kind)
        return self._checked(self.http.get(api.path(api.item, namespace, name))).json()

    def list(self, api_version: str, kind: str, namespace: str | None = None, **params: str) -> list[Json]:
        api = self.kind(api_version, kind)
        return self._checked(self.http.get(api.path(api.collection, namespace), params=params)).json()["items"]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Json:
        api = self.kind(api_version, kind)
        return self._checked(self.http.delete(api.path(api.item, namespace, name))).json()

    def __iter__(self) -> Iterator[KindApi]:
        return iter(self.kinds.values())

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise ApiError(response)
        return response
