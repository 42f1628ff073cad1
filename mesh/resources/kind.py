"""`ResourceKind`: everything the API needs to know about one kind, as plain data.

Each schema module (core, security, networking, gateway) declares its kinds with this type;
`mesh.resources.registry` collects them. The API layer never special-cases a kind by name:
names, scope, columns, defaulting and extra checks all come from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .base import Cause, causes_from_pydantic, dns1123_subdomain_error, field_path, invalid
from .meta import KubeObject

Getter = Callable[[dict[str, Any]], Any]


def jsonpath(path: str) -> Getter:
    """A getter for a simple dotted path such as `.spec.action` (missing parts give None)."""
    parts = [p for p in path.split(".") if p]

    def get(obj: dict[str, Any]) -> Any:
        cur: Any = obj
        for part in parts:
            if not isinstance(cur, dict):
                return None
            cur = cur.get(part)
        return cur

    return get


@dataclass(frozen=True)
class Column:
    """A column of `kubectl get` output (a Table column definition plus how to fill it)."""

    name: str
    get: Getter
    type: str = "string"
    priority: int = 0  # 1 and above only show with `-o wide`
    description: str = ""
    format: str = ""


def age() -> Column:
    """The AGE column: `creationTimestamp`, rendered as an age (`5s`, `3m`, `2d`)."""
    return Column("Age", jsonpath(".metadata.creationTimestamp"), type="date")


@dataclass(frozen=True)
class ResourceKind:
    """One served kind."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    model: type[KubeObject]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    columns: tuple[Column, ...] = ()
    # Why a name is not acceptable for this kind (default: RFC 1123 subdomain).
    name_error: Callable[[str], str | None] = dns1123_subdomain_error
    # Semantic checks beyond the schema: (object, validated model) -> causes.
    check: Callable[[dict[str, Any], Any], list[Cause]] | None = None
    # Fills defaults in place on create and update (e.g. Pod serviceAccountName).
    defaults: Callable[[dict[str, Any]], None] | None = None
    # Built-in kinds accept strategic-merge patches; custom resources answer 415.
    strategic_merge: bool = False
    # Top-level fields that make up the "spec" for generation bumps and status handling.
    spec_fields: tuple[str, ...] = ("spec",)
    # Selectable fields for fieldSelector beyond metadata.name / metadata.namespace.
    field_selectors: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def resource(self) -> str:
        """`pods` or `authorizationpolicies.security.istio.io`: how errors name the kind."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> str:
        """Stable identifier used in the store and the change stream: `group/plural` or `plural`."""
        return f"{self.group}/{self.plural}" if self.group else self.plural


@dataclass
class CheckResult:
    """The outcome of checking a document: the document to store and the unknown fields found."""

    obj: dict[str, Any]
    unknown: list[str]
    model: Any = None


class InvalidObject(Exception):
    """The document breaks the schema or a rule; nothing may be stored."""

    def __init__(self, kind: ResourceKind, name: str, causes: list[Cause]):
        self.kind = kind
        self.name = name
        self.causes = causes
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = ", ".join(f"{c.field}: {c.message}" if c.field else c.message for c in self.causes)
        if len(self.causes) > 1:
            parts = f"[{parts}]"
        return f'{self.kind.kind} "{self.name}" is invalid: {parts}'


def drop_fields(obj: dict[str, Any], locations: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Remove the fields at `locations` (tuples of keys and indexes) from a copy of `obj`."""
    out = _deep_copy(obj)
    for loc in locations:
        cur: Any = out
        for step in loc[:-1]:
            if (isinstance(cur, dict) and step in cur) or (
                isinstance(cur, list) and isinstance(step, int) and step < len(cur)
            ):
                cur = cur[step]
            else:
                break
        else:
            if loc and isinstance(cur, dict):
                cur.pop(loc[-1], None)
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def check_document(kind: ResourceKind, obj: dict[str, Any]) -> CheckResult:
    """Check a document against its kind. Unknown fields are reported, not raised; any other
    problem raises `InvalidObject` with every cause found.
    """
    name = (obj.get("metadata") or {}).get("name") or ""
    meta_causes = _metadata_causes(kind, obj)
    unknown: list[tuple[Any, ...]] = []
    model = None
    for _ in range(3):  # unknown fields are dropped and the rest validated again
        try:
            model = kind.model.model_validate(obj)
            break
        except ValidationError as e:
            causes, found = causes_from_pydantic(e)
            fresh = [loc for loc in found if loc not in unknown]
            if not causes and not fresh:  # unknown fields that could not be removed
                causes = [Cause(field_path(loc), "FieldValueInvalid", "unknown field") for loc in found]
            if causes:
                raise InvalidObject(kind, name, meta_causes + causes) from None
            unknown += fresh
            obj = drop_fields(obj, fresh)
    if model is None:
        raise InvalidObject(kind, name, [Cause("", "FieldValueInvalid", "the object could not be validated")])
    causes = meta_causes + (kind.check(obj, model) if kind.check is not None else [])
    if causes:
        raise InvalidObject(kind, name, causes)
    return CheckResult(obj=obj, unknown=sorted(field_path(loc) for loc in unknown), model=model)


def _metadata_causes(kind: ResourceKind, obj: dict[str, Any]) -> list[Cause]:
    meta = obj.get("metadata") or {}
    causes: list[Cause] = []
    name = meta.get("name")
    if name:
        problem = kind.name_error(name)
        if problem:
            causes.append(invalid("metadata.name", name, problem))
    gen = meta.get("generateName")
    if gen and not name:
        # The generated name adds five characters; the prefix must allow a valid result.
        problem = kind.name_error(gen + "abcde")
        if problem:
            causes.append(invalid("metadata.generateName", gen, problem))
    return causes
