"""Applying PATCH bodies to a stored object: JSON merge patch, JSON patch and strategic merge patch.

Pure functions over JSON-like values (dicts, lists, scalars); no I/O. The API layer picks the
function from the request's Content-Type (see docs/kubectl-compat §2, §3, §7):

- `application/merge-patch+json` (kubectl label/annotate, custom resources) → `apply_merge_patch`
- `application/json-patch+json` (the Python client with a list body) → `apply_json_patch`
- `application/strategic-merge-patch+json` (kubectl apply/patch on built-in kinds, the Python
  client with a dict body) → `apply_strategic_merge_patch`

Every function returns a new document and leaves its inputs untouched. Failures raise
`PatchError`: `bad_request` means the body itself is malformed (400), otherwise the body could
not be applied to this object (422), which is how the apiserver answers too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any, Final

import jsonpatch
import jsonpointer


class PatchError(Exception):
    """A patch that could not be applied; `message` is meant for the user.

    `bad_request` is True when the body is malformed (the apiserver answers 400 BadRequest),
    False when it is well formed but does not apply to the object (422).
    """

    def __init__(self, message: str, *, bad_request: bool = False):
        super().__init__(message)
        self.message = message
        self.bad_request = bad_request


# --- RFC 7386 JSON merge patch ---------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 §2 MergePatch over any JSON values: a non-object patch replaces the target.

    Used by `apply_merge_patch`; exposed because the RFC's examples include non-object documents.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    _merge_into(result, patch)
    return result


def _merge_into(doc: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            doc.pop(key, None)
        elif isinstance(value, dict):
            # RFC 7386: an object patch merges into an object; anything else starts from {}.
            if not isinstance(doc.get(key), dict):
                doc[key] = {}
            _merge_into(doc[key], value)
        else:
            doc[key] = copy.deepcopy(value)


def apply_merge_patch(target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 7386 merge patch to an object: `null` deletes a key, lists are replaced whole.

    The body must be a JSON object: the apiserver refuses anything else with 400 (evanphx
    json-patch's `ErrBadJSONPatch`), since a stored object cannot become an array or a scalar.
    """
    _require_object(patch, "JSON merge patch")
    return merge_patch(target, patch)


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def _require_object(body: Any, kind: str) -> None:
    # The apiserver answers 400 when the body does not even decode as the patch type requires.
    if not isinstance(body, dict):
        what = _JSON_TYPES.get(type(body), "a number")
        raise PatchError(f"invalid {kind}: the body must be a JSON object, not {what}", bad_request=True)


# --- RFC 6902 JSON patch ---------------------------------------------------------------------------


def apply_json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    """Apply an RFC 6902 JSON patch (a list of add/remove/replace/move/copy/test operations).

    The whole list applies or nothing does (RFC 6902 §5). A body that is not a list of objects is
    a bad request; an operation that fails (bad op, missing path, failed `test`) is a 422 naming
    the operation by its index.
    """
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise PatchError("invalid JSON patch: the body must be a JSON array of operations", bad_request=True)
    doc: Any = copy.deepcopy(target)
    for index, op in enumerate(ops):
        try:
            # A copy of the op, so that values it adds never alias the caller's body.
            doc = jsonpatch.JsonPatch([copy.deepcopy(op)]).apply(doc, in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            raise PatchError(
                f"JSON patch operation {index} (test {op.get('path')}) failed: "
                f"the value is not {json.dumps(op.get('value'))}"
            ) from None
        except jsonpatch.InvalidJsonPatch as e:
            raise PatchError(f"JSON patch operation {index} is invalid: {e}") from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError) as e:
            raise PatchError(
                f"JSON patch operation {index} ({op.get('op')} {op.get('path')}) failed: {_pointer_reason(e)}"
            ) from None
    if not isinstance(doc, dict):
        raise PatchError(f"JSON patch result must be a JSON object, not {_JSON_TYPES.get(type(doc), 'a number')}")
    return doc


def _pointer_reason(error: Exception) -> str:
    # jsonpointer's "member 'x' not found in {...}" quotes the whole document; keep the first part.
    text = str(error)
    head, sep, _ = text.partition(" not found in ")
    return f"{head} not found" if sep else text


# --- Kubernetes strategic merge patch ------------------------------------------------------------------

PRIMITIVE_MERGE: Final = "$primitive"
"""What a merge-key function returns for a list of scalars with `patchStrategy:"merge"`.

Any non-None merge key means "merge"; for scalars the key itself is unused (they merge as a set).
"""

_PATCH: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_SET_ORDER: Final = "$setElementOrder/"
_DELETE_FROM: Final = "$deleteFromPrimitiveList/"
_DELETED: Final = object()  # a map that carried `$patch: delete`
_MISSING: Final = object()

MergeKey = Callable[[tuple[str, ...]], str | None]

# patchMergeKey tags of k8s.io/api core/v1 (types.go), by the field's parent.
_METADATA_LISTS = {"ownerReferences": "uid", "finalizers": PRIMITIVE_MERGE}
_CONTAINER_LISTS = {
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
}
_CONTAINERS = frozenset({"containers", "initContainers", "ephemeralContainers"})
_POD_SPEC_LISTS = {
    **dict.fromkeys(_CONTAINERS, "name"),
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "schedulingGates": "name",
    "resourceClaims": "name",
}
_STATUS_LISTS = {"conditions": "type", "addresses": "type", "podIPs": "ip", "hostIPs": "ip"}
_EXACT_PATHS = {
    ("spec", "ports"): "port",  # ServiceSpec.Ports
    ("spec", "podCIDRs"): PRIMITIVE_MERGE,  # NodeSpec.PodCIDRs
    ("secrets",): "name",  # ServiceAccount.Secrets
    # ServiceAccount.imagePullSecrets has no patch strategy (unlike PodSpec's): replaced whole.
    ("imagePullSecrets",): None,
}


def kubernetes_merge_key(path: tuple[str, ...]) -> str | None:
    """The strategic-merge key of the list at `path` in a Pod, Service, Namespace, Node or ServiceAccount.

    `path` names the fields from the object root to the list, without list indices
    (`("spec", "containers", "env")`). Returns the `patchMergeKey` of Kubernetes' core/v1 types,
    `PRIMITIVE_MERGE` for scalar lists merged as a set (`metadata.finalizers`), or None for lists
    that a patch replaces whole. Pod-spec rules match any `spec` parent, so pod templates work too.
    """
    if path in _EXACT_PATHS:
        return _EXACT_PATHS[path]
    if len(path) < 2:
        return None
    parent, field = path[-2], path[-1]
    if parent == "metadata":
        return _METADATA_LISTS.get(field)
    if parent == "status":
        return _STATUS_LISTS.get(field)
    if parent in _CONTAINERS:
        return _CONTAINER_LISTS.get(field)
    if parent == "spec":
        return _POD_SPEC_LISTS.get(field)
    return None


def apply_strategic_merge_patch(
    target: dict[str, Any], patch: Any, merge_key: MergeKey = kubernetes_merge_key
) -> dict[str, Any]:
    """Apply a Kubernetes strategic merge patch, the subset kubectl and the Python client send.

    Maps merge and `null` deletes; lists whose `merge_key(path)` is set merge element by element
    (scalars as a set), other lists are replaced. Directives follow apimachinery's strategicpatch
    package: `$patch: replace|delete|merge`, `$setElementOrder/<f>`, `$deleteFromPrimitiveList/<f>`
    and `$retainKeys`. No directive survives into the result.
    """
    _require_object(patch, "strategic merge patch")
    merged = _StrategicMerge(merge_key).map(copy.deepcopy(target), patch, ())
    return {} if merged is _DELETED else merged


class _StrategicMerge:
    """One patch application. `original` arguments are owned (mutated); patches are only read."""

    def __init__(self, merge_key: MergeKey):
        self.merge_key = merge_key

    def map(self, original: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]) -> Any:
        directive = patch.get(_PATCH, _MISSING)
        if directive is not _MISSING:
            patch = {k: v for k, v in patch.items() if k != _PATCH}
            if directive == "delete":
                return _DELETED
            if directive == "replace":
                original = {}
            elif directive != "merge":
                raise PatchError(f"unknown patch type: {directive} in map: {json.dumps(patch)}")
        self._retain_keys(original, patch)
        rest = self._ordered_lists(original, patch, path)
        for key, value in rest.items():
            if key.startswith(_DELETE_FROM):
                self._delete_from_list(original, key[len(_DELETE_FROM) :], value)
        for key, value in rest.items():
            if key == _RETAIN_KEYS or key.startswith(_DELETE_FROM):
                continue
            merged = _DELETED if value is None else self.value(original.get(key, _MISSING), value, (*path, key))
            if merged is _DELETED:
                original.pop(key, None)
            else:
                original[key] = merged
        return original

    def value(self, original: Any, patch: Any, path: tuple[str, ...]) -> Any:
        """The merge of one field; a patch of another type than the original replaces it."""
        if isinstance(patch, dict):
            return self.map(original if isinstance(original, dict) else {}, patch, path)
        if isinstance(patch, list):
            if self.merge_key(path) is None:
                return self._materialize_list(patch, path)
            return self.list(original if isinstance(original, list) else [], patch, path)
        return patch

    def _materialize_list(self, items: list[Any], path: tuple[str, ...]) -> list[Any]:
        # A replaced list is taken as sent, minus directives: apimachinery would keep them, but they
        # are not data, and `{"$patch": "replace"}` in a replace-strategy list means what it says.
        out = []
        for item in items:
            if isinstance(item, dict) and _PATCH in item:
                continue
            out.append(self.value(_MISSING, item, path) if isinstance(item, dict | list) else item)
        return out

    def list(
        self, original: list[Any], patch: list[Any], path: tuple[str, ...], order: list[Any] | None = None
    ) -> list[Any]:
        """Merge `patch` into `original` by merge key, then order as apimachinery does."""
        key = self.merge_key(path) or PRIMITIVE_MERGE
        items, deletes, replace = _split_list_directives(patch)
        _require_keys(deletes, key, path)
        gone = [d[key] for d in deletes]
        base = [] if replace else [e for e in original if not _member(_identity(e, key), gone)]
        server_order = items if replace else original
        if all(not isinstance(e, dict) for e in base + items):
            merged = _dedupe(base + items)
        elif all(isinstance(e, dict) for e in base + items):
            merged = self._merge_keyed(base, items, key, path)
            if order is not None:
                _require_keys(order, key, path)
        else:
            raise PatchError(f"list {'.'.join(path)} mixes objects and scalars and cannot be merged")
        return _normalize_order(merged, order if order is not None else items, server_order, key)

    def _merge_keyed(self, base: list[Any], items: list[Any], key: str, path: tuple[str, ...]) -> list[Any]:
        merged = list(base)
        _require_keys(items, key, path)
        for item in items:
            at = _index(merged, item[key], key)
            if at >= 0:
                merged[at] = self.map(merged[at], item, path)
            else:
                merged.append(self.map({}, item, path))
        return merged

    def _retain_keys(self, original: dict[str, Any], patch: dict[str, Any]) -> None:
        # apimachinery applyRetainKeysDirective: every field the patch sets must be listed, then
        # the original keeps only the listed fields before the rest of the patch merges in.
        keep = patch.get(_RETAIN_KEYS)
        if keep is None:
            return
        if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
            raise PatchError(f"$retainKeys must be a list of field names, not {json.dumps(keep)}")
        for key, value in patch.items():
            if value is None or key.startswith("$"):
                continue
            if key not in keep:
                raise PatchError(f"invalid patch format of retainKeys: field {key!r} is not in $retainKeys")
        for key in [k for k in original if k not in keep]:
            del original[key]

    def _ordered_lists(self, original: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]) -> dict:
        """Merge each list that has a `$setElementOrder/<f>`; return the rest of the patch."""
        rest = dict(patch)
        for name, order in patch.items():
            if not name.startswith(_SET_ORDER):
                continue
            del rest[name]
            field = name[len(_SET_ORDER) :]
            # Only merged lists keep an order; a replaced list simply takes the patch's order.
            if self.merge_key((*path, field)) is None or rest.get(field, _MISSING) is None:
                continue
            if not isinstance(order, list):
                raise PatchError(f"{name} must be a list, not {json.dumps(order)}")
            current = original.get(field)
            items = rest.pop(field, _MISSING)
            if items is _MISSING and not isinstance(current, list):
                continue  # nothing to reorder, and an order alone does not create the list
            items = items if isinstance(items, list) else []
            current = current if isinstance(current, list) else []
            original[field] = self.list(current, items, (*path, field), order=order)
        return rest

    def _delete_from_list(self, original: dict[str, Any], field: str, values: Any) -> None:
        if not isinstance(values, list):
            raise PatchError(f"{_DELETE_FROM}{field} must be a list, not {json.dumps(values)}")
        current = original.get(field)
        if isinstance(current, list):
            original[field] = [e for e in current if not _member(e, values)]


def _split_list_directives(patch: list[Any]) -> tuple[list[Any], list[dict], bool]:
    """apimachinery mergeSliceWithSpecialElements: (plain items, `$patch: delete` items, replace?)."""
    items: list[Any] = []
    deletes: list[dict] = []
    replace = False
    for item in patch:
        directive = item.get(_PATCH, _MISSING) if isinstance(item, dict) else _MISSING
        if directive is _MISSING:
            items.append(item)
        elif directive == "replace":
            replace = True
        elif directive == "delete":
            deletes.append(item)
        elif directive == "merge":
            raise PatchError("merging lists cannot yet be specified in the patch")
        else:
            raise PatchError(f"unknown patch type: {directive} in map: {json.dumps(item)}")
    return items, deletes, replace


def _require_keys(items: list[Any], key: str, path: tuple[str, ...]) -> None:
    """Every element that identifies an object in a merged list must carry the merge key."""
    if items and key == PRIMITIVE_MERGE:
        # Objects where the schema declares scalars: apimachinery has no key to match them by.
        raise PatchError(f"cannot merge lists without merge key for {'.'.join(path)}")
    for item in items:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"map: {json.dumps(item)} does not contain declared merge key: {key}")


def _same(a: Any, b: Any) -> bool:
    # JSON equality: true and 1 are different values (Python says they are equal).
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _identity(item: Any, key: str) -> Any:
    return item.get(key, _MISSING) if isinstance(item, dict) else item


def _index(items: list[Any], identity: Any, key: str) -> int:
    for i, item in enumerate(items):
        if _same(_identity(item, key), identity):
            return i
    return -1


def _member(value: Any, values: list[Any]) -> bool:
    return any(_same(value, v) for v in values)


def _dedupe(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if not _member(item, out):
            out.append(item)
    return out


def _normalize_order(merged: list[Any], patch_order: list[Any], server_order: list[Any], key: str) -> list:
    """apimachinery normalizeElementOrder: patch items in patch order, server-only items in server
    order, then interleaved so that a server-only item goes before a patch item only when it came
    before it in the server's list (so new items come first, as `kubectl patch` shows)."""

    def position(order: list[Any], item: Any) -> int:
        return _index(order, _identity(item, key), key)

    right = sorted((e for e in merged if position(patch_order, e) >= 0), key=lambda e: position(patch_order, e))
    left = [e for e in merged if position(patch_order, e) < 0]
    left.sort(key=lambda e: (position(server_order, e) < 0, position(server_order, e)))
    out: list[Any] = []
    while left or right:
        take_left = not right or (left and 0 <= position(server_order, left[0]) < position(server_order, right[0]))
        out.append((left if take_left else right).pop(0))
    return out
