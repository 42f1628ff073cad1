"""What the API verbs do to the store: create, replace, patch, delete, read, list.

Each write is a mutation handed to the single writer, so checking a `resourceVersion`, reading
the current object and writing the new one happen atomically. Validation happens inside the
mutation too: a refused object is never half-stored, and the store revision only moves when
something was written.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mesh.resources.base import Cause, invalid
from mesh.resources.kind import InvalidObject, ResourceKind, check_document
from mesh.selectors import FieldSelector, LabelSelector

from . import errors, patching
from .admission import Admission, generate_name, new_uid, now_rfc3339
from .store.state import Index, Stored, Txn
from .store.writer import Writer

Json = dict[str, Any]

STRICT, WARN, IGNORE = "Strict", "Warn", "Ignore"


@dataclass
class WriteOptions:
    """Per-request options: `?dryRun=All`, `?fieldValidation=`."""

    dry_run: bool = False
    field_validation: str = STRICT
    warnings: list[str] = field(default_factory=list)


@dataclass
class Preconditions:
    """DeleteOptions.preconditions."""

    uid: str | None = None
    resource_version: str | None = None


PATCH_MERGE = "application/merge-patch+json"
PATCH_STRATEGIC = "application/strategic-merge-patch+json"
PATCH_JSON = "application/json-patch+json"
PATCH_APPLY = "application/apply-patch+yaml"


class Repository:
    """The store's operations in Kubernetes terms."""

    def __init__(self, index: Index, writer: Writer, admission: Admission):
        self.index = index
        self.writer = writer
        self.admission = admission

    # --- reads ----------------------------------------------------------------------------------

    def get(self, kind: ResourceKind, namespace: str, name: str) -> Stored:
        obj = self.index.get(kind.key, namespace, name)
        if obj is None:
            raise errors.not_found(kind, name)
        return obj

    def list(
        self,
        kind: ResourceKind,
        namespace: str | None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> tuple[list[Stored], int]:
        """Matching objects and the revision the list is consistent with."""
        name = fields.exact("metadata.name") if fields is not None else None
        if name is not None and namespace is not None:
            found = self.index.get(kind.key, namespace, name)
            candidates = [found] if found is not None else []
        else:
            candidates = self.index.list(kind.key, namespace)
        items = [o for o in candidates if matches(o.data, labels, fields)]
        return items, self.index.revision

    # --- writes ---------------------------------------------------------------------------------

    async def create(self, kind: ResourceKind, namespace: str, body: Json, opts: WriteOptions) -> Stored:
        body = _check_envelope(kind, body)
        _set_namespace(kind, body, namespace)

        def mutate(txn: Txn) -> Stored:
            obj = copy.deepcopy(body)
            meta = obj["metadata"]
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise errors.invalid(kind, "", [_name_required()])
                meta["name"] = generate_name(meta["generateName"])
            obj = self._validate(kind, obj, opts)
            meta = obj["metadata"]
            if txn.get(kind.key, namespace, meta["name"]) is not None:
                raise errors.already_exists(kind, meta["name"])
            meta.update(uid=new_uid(), creationTimestamp=now_rfc3339(), generation=1)
            for server_set in (
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ):
                meta.pop(server_set, None)
            if kind.status_subresource:
                obj.pop("status", None)  # status is written through the status subresource only
            _apply_defaults(kind, obj)
            self.admission.before_create(txn, kind, obj)
            stored = txn.write(kind.key, namespace, meta["name"], obj)
            self.admission.after_create(txn, kind, obj)
            return stored

        return await self.writer.submit(mutate, dry_run=opts.dry_run)

    async def replace(
        self,
        kind: ResourceKind,
        namespace: str,
        name: str,
        body: Json,
        opts: WriteOptions,
        *,
        status: bool = False,
        guard: Callable[[Json, Json], None] | None = None,
    ) -> Stored:
        """PUT: the whole object (or only its status with `status=True`)."""
        body = _check_envelope(kind, body)
        _check_name(body, name)
        _set_namespace(kind, body, namespace)
        return await self.writer.submit(
            lambda txn: self._update(txn, kind, namespace, name, body, opts, status, guard), dry_run=opts.dry_run
        )

    async def patch(
        self,
        kind: ResourceKind,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        opts: WriteOptions,
        *,
        status: bool = False,
        force: bool = False,
        guard: Callable[[Json, Json], None] | None = None,
    ) -> Stored:
        """PATCH with a merge, strategic-merge, JSON or apply patch."""
        if content_type == PATCH_STRATEGIC and not kind.strategic_merge:
            raise errors.unsupported_media_type(
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{PATCH_JSON}, {PATCH_MERGE}, {PATCH_APPLY}"
            )

        def mutate(txn: Txn) -> Stored:
            current = txn.get(kind.key, namespace, name)
            if content_type == PATCH_APPLY:
                if current is None:
                    return self._apply_create(txn, kind, namespace, name, patch, opts)
                patched = _apply_patch(PATCH_MERGE, current.data, _without_server_fields(patch))
            else:
                if current is None:
                    raise errors.not_found(kind, name)
                patched = _apply_patch(content_type, current.data, patch)
            if not isinstance(patched, dict):
                raise errors.bad_request("the patch must produce a JSON object")
            _check_envelope(kind, patched)
            _check_name(patched, name)
            _set_namespace(kind, patched, namespace)
            return self._update(txn, kind, namespace, name, patched, opts, status, guard)

        return await self.writer.submit(mutate, dry_run=opts.dry_run)

    async def delete(
        self, kind: ResourceKind, namespace: str, name: str, pre: Preconditions, opts: WriteOptions
    ) -> Stored:
        def mutate(txn: Txn) -> Stored:
            current = txn.get(kind.key, namespace, name)
            if current is None:
                raise errors.not_found(kind, name)
            if pre.uid and pre.uid != current.uid:
                why = f"Precondition failed: UID in precondition: {pre.uid}, UID in object meta: {current.uid}"
                raise errors.conflict(kind, name, why)
            if pre.resource_version and pre.resource_version != str(current.revision):
                why = (
                    f"Precondition failed: ResourceVersion in precondition: {pre.resource_version}, "
                    f"ResourceVersion in object meta: {current.revision}"
                )
                raise errors.conflict(kind, name, why)
            self.admission.before_delete(txn, kind, current)
            return txn.delete(kind.key, namespace, name)

        return await self.writer.submit(mutate, dry_run=opts.dry_run)

    async def delete_collection(
        self,
        kind: ResourceKind,
        namespace: str | None,
        labels: LabelSelector | None,
        fields: FieldSelector | None,
        opts: WriteOptions,
    ) -> list[Stored]:
        def mutate(txn: Txn) -> list[Stored]:
            gone = []
            for obj in txn.list(kind.key, namespace):
                if matches(obj.data, labels, fields) and txn.get(*obj.key) is not None:
                    self.admission.before_delete(txn, kind, obj)
                    gone.append(txn.delete(*obj.key))
            return gone

        return await self.writer.submit(mutate, dry_run=opts.dry_run)

    async def ensure(self, kind: ResourceKind, body: Json) -> None:
        """Create an object if it does not exist (bootstrap of the built-in namespaces)."""
        meta = body["metadata"]
        if self.index.get(kind.key, meta.get("namespace", ""), meta["name"]) is None:
            try:
                await self.create(kind, meta.get("namespace", ""), body, WriteOptions())
            except errors.ApiError as e:
                if e.reason != "AlreadyExists":
                    raise

    # --- the shared update path -----------------------------------------------------------------

    def _update(
        self,
        txn: Txn,
        kind: ResourceKind,
        namespace: str,
        name: str,
        body: Json,
        opts: WriteOptions,
        status: bool,
        guard: Callable[[Json, Json], None] | None = None,
    ) -> Stored:
        current = txn.get(kind.key, namespace, name)
        if current is None:
            raise errors.not_found(kind, name)
        old = current.data
        meta_in = body.get("metadata") or {}
        rv = meta_in.get("resourceVersion")
        if rv not in (None, "") and str(rv) != str(current.revision):
            raise errors.conflict(kind, name)
        if meta_in.get("uid") and meta_in["uid"] != current.uid:
            why = f"Precondition failed: UID in precondition: {meta_in['uid']}, UID in object meta: {current.uid}"
            raise errors.conflict(kind, name, why)
        if status:
            # The status subresource changes status only; everything else stays as stored.
            obj = {**copy.deepcopy(old), "status": copy.deepcopy(body.get("status"))}
            if obj["status"] is None:
                obj.pop("status")
        else:
            obj = copy.deepcopy(body)
            if kind.status_subresource:
                if "status" in old:
                    obj["status"] = copy.deepcopy(old["status"])
                else:
                    obj.pop("status", None)
        meta = obj.setdefault("metadata", {})
        for kept in (
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if kept in old["metadata"]:
                meta[kept] = old["metadata"][kept]
            else:
                meta.pop(kept, None)
        if not status:
            self.admission.prepare_update(kind, obj, current)
        obj = self._validate(kind, obj, opts)
        _apply_defaults(kind, obj)
        if not status:
            self.admission.before_update(txn, kind, obj, current)
        if guard is not None:
            guard(old, obj)  # a node's write: may it change this object this way?
        if any(obj.get(f) != old.get(f) for f in kind.spec_fields):
            obj["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
        if _same_content(obj, old):
            return current  # a no-op update writes nothing and keeps the resourceVersion
        return txn.write(kind.key, namespace, name, obj)

    def _apply_create(
        self, txn: Txn, kind: ResourceKind, namespace: str, name: str, body: Any, opts: WriteOptions
    ) -> Stored:
        # Server-side apply of an object that does not exist yet is a create.
        if not isinstance(body, dict):
            raise errors.bad_request("the apply patch must be a JSON or YAML object")
        body = _check_envelope(kind, copy.deepcopy(body))
        _check_name(body, name)
        _set_namespace(kind, body, namespace)
        obj = self._validate(kind, body, opts)
        meta = obj["metadata"]
        meta.update(uid=new_uid(), creationTimestamp=now_rfc3339(), generation=1)
        meta.pop("resourceVersion", None)
        if kind.status_subresource:
            obj.pop("status", None)
        _apply_defaults(kind, obj)
        self.admission.before_create(txn, kind, obj)
        stored = txn.write(kind.key, namespace, name, obj)
        self.admission.after_create(txn, kind, obj)
        return stored

    def _validate(self, kind: ResourceKind, obj: Json, opts: WriteOptions) -> Json:
        try:
            result = check_document(kind, obj)
        except InvalidObject as e:
            raise errors.from_invalid(e) from None
        if result.unknown:
            if opts.field_validation == STRICT:
                raise errors.bad_request(unknown_fields_message(kind, result.unknown))
            if opts.field_validation == WARN:
                opts.warnings.extend(f'unknown field "{path}"' for path in result.unknown)
        return result.obj


def unknown_fields_message(kind: ResourceKind, paths: list[str]) -> str:
    """The apiserver's wording: built-in kinds say "strict decoding error", CRDs do not."""
    if kind.strategic_merge:
        return "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in paths)
    return ", ".join(f".{p}: field not declared in schema" for p in paths)


def matches(obj: Json, labels: LabelSelector | None, fields: FieldSelector | None) -> bool:
    if labels is not None and not labels.matches(obj["metadata"].get("labels") or {}):
        return False
    return fields is None or fields.matches(obj)


def _check_envelope(kind: ResourceKind, body: Any) -> Json:
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request must be a JSON object")
    api_version, kind_name = body.get("apiVersion"), body.get("kind")
    if api_version in (None, "") and kind_name in (None, ""):
        body = {**body, "apiVersion": kind.api_version, "kind": kind.kind}
    elif api_version != kind.api_version or kind_name != kind.kind:
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version ({kind.api_version})"
            if api_version != kind.api_version
            else f"the kind in the data ({kind_name}) does not match the expected kind ({kind.kind})"
        )
    meta = body.get("metadata")
    if meta is None:
        body = {**body, "metadata": {}}
    elif not isinstance(meta, dict):
        raise errors.invalid(kind, "", [_meta_object()])
    return body


def _meta_object() -> Cause:
    return invalid("metadata", "", "must be an object")


def _name_required() -> Cause:
    return Cause("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")


def _check_name(body: Json, name: str) -> None:
    given = (body.get("metadata") or {}).get("name")
    if given not in (None, "") and given != name:
        raise errors.bad_request(f"the name of the object ({given}) does not match the name on the URL ({name})")
    body.setdefault("metadata", {})["name"] = name


def _set_namespace(kind: ResourceKind, body: Json, namespace: str) -> None:
    meta = body.setdefault("metadata", {})
    given = meta.get("namespace")
    if not kind.namespaced:
        meta.pop("namespace", None)
        return
    if given not in (None, "") and given != namespace:
        raise errors.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    meta["namespace"] = namespace


def _apply_defaults(kind: ResourceKind, obj: Json) -> None:
    if kind.defaults is not None:
        kind.defaults(obj)


def _apply_patch(content_type: str, current: Json, patch: Any) -> Any:
    try:
        if content_type == PATCH_MERGE:
            return patching.apply_merge_patch(current, patch)
        if content_type == PATCH_STRATEGIC:
            if not isinstance(patch, dict):
                raise patching.PatchError("a strategic merge patch must be a JSON object", bad_request=True)
            return patching.apply_strategic_merge_patch(current, patch)
        if content_type == PATCH_JSON:
            return patching.apply_json_patch(current, patch)
    except patching.PatchError as e:
        if getattr(e, "bad_request", False):
            raise errors.bad_request(str(e)) from None
        raise errors.ApiError(
            422, "Invalid", f"the server rejected our request due to an error in our request: {e}"
        ) from None
    raise errors.unsupported_media_type(f"unsupported patch type {content_type!r}")


def _without_server_fields(body: Any) -> Any:
    if not isinstance(body, dict):
        raise errors.bad_request("the apply patch must be a JSON or YAML object")
    meta = {
        k: v for k, v in (body.get("metadata") or {}).items() if k not in ("resourceVersion", "uid", "managedFields")
    }
    return {**body, "metadata": meta}


def _same_content(new: Json, old: Json) -> bool:
    def strip(o: Json) -> Json:
        return {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}}

    return strip(new) == strip(old)
