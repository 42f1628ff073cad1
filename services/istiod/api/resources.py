"""The resource endpoints: `/api/v1/...` and `/apis/{group}/{version}/...` for every kind.

Paths are parsed here rather than declared route by route: the apiserver's URL space is
ambiguous to a pattern router (`/api/v1/namespaces/x/status` is a namespace's status, while
`/api/v1/namespaces/x/pods` is a collection), and all kinds share the same verbs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from mesh.resources.core import NODE, SERVICE_ACCOUNT
from mesh.resources.kind import ResourceKind
from mesh.resources.registry import Registry
from mesh.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

from .. import errors
from ..auth import Principal, may
from ..node_restriction import Guard, guard_for, node_of
from ..nodes import NodeService
from ..repository import STRICT, Preconditions, Repository, WriteOptions
from ..sa_tokens import ServiceAccountTokens
from ..store.history import History
from ..store.state import Stored
from . import discovery, tables
from .http import (
    error_response,
    json_response,
    query_flag,
    read_body,
    read_optional_body,
    read_token_request,
    wants_table,
)
from .watch import WatchRequest, WatchStream

FIELD_VALIDATION = ("Strict", "Warn", "Ignore")
# Subresources beyond `status`, by kind: a Node's `token` (POST: rotate and return its token) and
# a ServiceAccount's `token` (POST: the TokenRequest API).
EXTRA_SUBRESOURCES = {"nodes": ("token",), "serviceaccounts": ("token",)}
DEFAULT_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass
class Target:
    """What a path addresses."""

    kind: ResourceKind
    namespace: str | None  # None: all namespaces (namespaced kinds) or cluster scope
    name: str | None
    subresource: str | None

    @property
    def scope_namespace(self) -> str:
        return self.namespace or ""


def parse_target(registry: Registry, group: str, version: str, parts: list[str]) -> Target:
    """Resolve the path segments after `/api/v1` or `/apis/{g}/{v}`."""
    parts = [p for p in parts if p]

    def kind_for(plural: str) -> ResourceKind:
        kind = registry.by_path(group, version, plural)
        if kind is None:
            raise errors.path_not_found()
        return kind

    if len(parts) >= 3 and parts[0] == "namespaces":
        candidate = registry.by_path(group, version, parts[2])
        if candidate is not None and candidate.namespaced:
            allowed = ("status", *EXTRA_SUBRESOURCES.get(candidate.key, ()))
            if len(parts) > 5 or (len(parts) == 5 and parts[4] not in allowed):
                raise errors.path_not_found()
            name = parts[3] if len(parts) > 3 else None
            sub = parts[4] if len(parts) > 4 else None
            return Target(candidate, parts[1], name, sub)
    if not parts or len(parts) > 3:
        raise errors.path_not_found()
    kind = kind_for(parts[0])
    if len(parts) == 3 and parts[2] not in ("status", *EXTRA_SUBRESOURCES.get(kind.key, ())):
        raise errors.path_not_found()
    if kind.namespaced and len(parts) > 1:
        raise errors.path_not_found()  # a namespaced kind's objects live under /namespaces/{ns}/
    return Target(kind, None, parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None)


def _selectors(request: Request, kind: ResourceKind) -> tuple[LabelSelector | None, FieldSelector | None]:
    try:
        label_text = request.query_params.get("labelSelector")
        field_text = request.query_params.get("fieldSelector")
        labels = parse_label_selector(label_text) if label_text else None
        fields = parse_field_selector(field_text, DEFAULT_FIELDS + kind.field_selectors) if field_text else None
    except SelectorError as e:
        raise errors.bad_request(str(e)) from None
    return labels, fields


def _write_options(request: Request) -> WriteOptions:
    dry_run = request.query_params.getlist("dryRun")
    for value in dry_run:
        if value != "All":
            raise errors.bad_request(f'Invalid dryRun value: "{value}": supported values: "All"')
    mode = request.query_params.get("fieldValidation") or STRICT
    if mode not in FIELD_VALIDATION:
        raise errors.bad_request(f'fieldValidation must be one of "Ignore", "Warn", "Strict", got "{mode}"')
    return WriteOptions(dry_run=bool(dry_run), field_validation=mode)


def _list_body(kind: ResourceKind, items: list[Stored], revision: int) -> bytes:
    meta = f'"metadata":{{"resourceVersion":"{revision}"}}'
    head = f'{{"kind":"{kind.kind}List","apiVersion":"{kind.api_version}",{meta},"items":['
    return head.encode() + b",".join(o.json for o in items) + b"]}"


def _verb(method: str, target: Target, watch: bool) -> str:
    if method == "GET":
        if target.name is None:
            return "watch" if watch else "list"
        return "get"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "deletecollection" if target.name is None else "delete"
    raise errors.method_not_allowed()


class ResourceHandler:
    """Serves every resource request: authorizes, dispatches by verb, and records metrics."""

    def __init__(
        self,
        registry: Registry,
        repo: Repository,
        history: History,
        metrics: Any,
        nodes: NodeService,
        bookmark_interval: float = 30.0,
        sa_tokens: ServiceAccountTokens | None = None,
    ):
        self.nodes = nodes
        self.sa_tokens = sa_tokens
        self.registry = registry
        self.repo = repo
        self.history = history
        self.metrics = metrics
        self.bookmark_interval = bookmark_interval

    async def handle(
        self, request: Request, principal: Principal, group: str, version: str, parts: list[str]
    ) -> Response:
        started = time.perf_counter()
        kind_label, verb, response = "", request.method.lower(), None
        try:
            if not parts:
                return self._group_version_discovery(group, version)
            target = parse_target(self.registry, group, version, parts)
            kind_label = target.kind.resource
            watch = request.method == "GET" and query_flag(request, "watch")
            verb = _verb(request.method, target, watch)
            if target.kind is SERVICE_ACCOUNT and target.subresource == "token":
                response = await self._service_account_token(request, principal, target, verb)
                return response
            guard = None
            if not may(principal, verb, target.kind.key):
                if node_of(principal) is None:
                    raise errors.forbidden(principal.user, verb, target.kind, target.namespace, target.name or "")
                guard = guard_for(principal, target.kind.key, target.subresource, verb, target.name)
            response = await self._dispatch(request, target, verb, guard)
            return response
        except errors.ApiError as e:
            response = error_response(e)
            return response
        finally:
            code = response.status_code if response is not None else 500
            self.metrics.observe_request(verb, kind_label, code, time.perf_counter() - started)

    def _group_version_discovery(self, group: str, version: str) -> Response:
        body = discovery.resource_list(self.registry, group, version)
        if body is None:
            raise errors.path_not_found()
        return json_response(body)

    async def _service_account_token(
        self, request: Request, principal: Principal, target: Target, verb: str
    ) -> Response:
        """TokenRequest: authorized by the binding it asks for, not by the verb (see sa_tokens)."""
        if verb != "create" or self.sa_tokens is None:
            raise errors.method_not_allowed()
        body = await read_token_request(request)
        answer = self.sa_tokens.create(principal, target.scope_namespace, target.name or "", body)
        return json_response(answer, 201)

    async def _dispatch(self, request: Request, target: Target, verb: str, guard: Guard | None = None) -> Response:
        kind, ns, name = target.kind, target.scope_namespace, target.name
        if target.subresource == "token":
            if verb != "create":
                raise errors.method_not_allowed()
            return json_response(await self.nodes.rotate(name, await read_optional_body(request)), 201)
        if target.subresource == "status" and verb not in ("get", "update", "patch"):
            raise errors.method_not_allowed()
        if verb == "get":
            obj = self.repo.get(kind, ns, name)
            return self._object_response(request, kind, obj)
        if verb in ("list", "watch"):
            return self._list_or_watch(request, target, verb == "watch")
        if verb == "create":
            if target.namespace is None and kind.namespaced:
                raise errors.method_not_allowed()
            opts = _write_options(request)
            body = await read_body(request)
            if kind is NODE:
                return json_response(await self.nodes.create(body, opts), 201, warnings=opts.warnings)
            obj = await self.repo.create(kind, ns, body, opts)
            return json_response(obj.json, 201, warnings=opts.warnings)
        if verb == "update":
            opts = _write_options(request)
            body = await read_body(request)
            obj = await self.repo.replace(
                kind, ns, name, body, opts, status=target.subresource == "status", guard=guard
            )
            return json_response(obj.json, warnings=opts.warnings)
        if verb == "patch":
            opts = _write_options(request)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            patch = await read_body(request)
            obj = await self.repo.patch(
                kind,
                ns,
                name,
                content_type,
                patch,
                opts,
                status=target.subresource == "status",
                force=query_flag(request, "force"),
                guard=guard,
            )
            return json_response(obj.json, warnings=opts.warnings)
        if verb == "delete":
            return await self._delete(request, target)
        if verb == "deletecollection":
            if target.namespace is None and kind.namespaced:
                raise errors.method_not_allowed()
            labels, fields = _selectors(request, kind)
            await self.repo.delete_collection(
                kind, target.namespace if kind.namespaced else None, labels, fields, _write_options(request)
            )
            return json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"group": kind.group, "kind": kind.plural},
                }
            )
        raise errors.method_not_allowed()

    def _object_response(self, request: Request, kind: ResourceKind, obj: Stored) -> Response:
        if wants_table(request):
            return json_response(tables.table(kind, [obj], obj.revision))
        return json_response(obj.json)

    def _list_or_watch(self, request: Request, target: Target, watch: bool) -> Response:
        kind = target.kind
        namespace = target.namespace if kind.namespaced else None
        labels, fields = _selectors(request, kind)
        if watch:
            timeout = request.query_params.get("timeoutSeconds")
            req = WatchRequest(
                kind=kind,
                namespace=namespace,
                labels=labels,
                fields=fields,
                resource_version=request.query_params.get("resourceVersion"),
                as_table=wants_table(request),
                bookmarks=query_flag(request, "allowWatchBookmarks"),
                send_initial_events=query_flag(request, "sendInitialEvents"),
                timeout=float(timeout) if timeout and timeout.isdigit() and int(timeout) > 0 else None,
                bookmark_interval=self.bookmark_interval,
            )
            stream = WatchStream(self.repo, self.history, req)
            return StreamingResponse(stream.events(), media_type="application/json")
        items, revision = self.repo.list(kind, namespace, labels, fields)
        if wants_table(request):
            return json_response(tables.table(kind, items, revision))
        return json_response(_list_body(kind, items, revision))

    async def _delete(self, request: Request, target: Target) -> Response:
        body = await read_optional_body(request)
        pre = Preconditions()
        opts = _write_options(request)
        if isinstance(body, dict):
            given = body.get("preconditions") or {}
            pre = Preconditions(uid=given.get("uid"), resource_version=given.get("resourceVersion"))
            if body.get("dryRun"):
                opts.dry_run = body["dryRun"] == ["All"] or opts.dry_run
        obj = await self.repo.delete(target.kind, target.scope_namespace, target.name, pre, opts)
        return json_response(obj.json)
