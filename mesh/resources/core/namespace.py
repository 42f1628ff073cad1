"""The v1 Namespace kind: its schema and the defaults the apiserver adds on create."""

from __future__ import annotations

from typing import Any, Literal

from ..base import Model, dns1123_label_error
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import KubeObject

Json = dict[str, Any]


class NamespaceSpec(Model):
    finalizers: list[str] | None = None


class NamespaceStatus(Model):
    phase: Literal["Active", "Terminating"] | None = None
    conditions: list[Json] | None = None


class Namespace(KubeObject):
    spec: NamespaceSpec | None = None
    status: NamespaceStatus | None = None


def _namespace_defaults(obj: Json) -> None:
    # What the apiserver adds: the immutable name label, the finalizer and the phase. kubectl
    # apply still reports "unchanged" because none of these fields are in users' manifests.
    meta = obj["metadata"]
    meta.setdefault("labels", {})
    if meta["labels"] is None:
        meta["labels"] = {}
    meta["labels"]["kubernetes.io/metadata.name"] = meta["name"]
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    status = obj.get("status") or {}
    status.setdefault("phase", "Active")
    obj["status"] = status


NAMESPACE = ResourceKind(
    group="",
    version="v1",
    kind="Namespace",
    plural="namespaces",
    namespaced=False,
    model=Namespace,
    short_names=("ns",),
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Status", jsonpath(".status.phase")),
        age(),
    ),
    name_error=dns1123_label_error,
    defaults=_namespace_defaults,
    strategic_merge=True,
    field_selectors=("status.phase",),
)
