"""Object metadata and the top-level object shape shared by every kind."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from .base import Annotations, Labels, Model


class OwnerReference(Model):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(Model):
    """`metadata`: what clients may send. Server-set fields are accepted and then overwritten."""

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: Labels | None = None
    annotations: Annotations | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    finalizers: list[str] | None = None
    owner_references: list[OwnerReference] | None = None
    # Written by server-side apply clients; kept as given, never interpreted.
    managed_fields: list[dict[str, Any]] | None = None
    self_link: str | None = None

    @field_validator("annotations")
    @classmethod
    def _annotations_size(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # apimachinery: the total size of annotation keys and values is at most 256 KiB.
        if value and sum(len(k) + len(v) for k, v in value.items()) > 256 * 1024:
            raise ValueError("may not be more than 262144 bytes")
        return value


class KubeObject(Model):
    """The envelope of every object; each kind adds `spec`, `status` or its own fields."""

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta


class Condition(Model):
    """metav1.Condition (Gateway API, Istio status)."""

    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    last_probe_time: str | None = None
    observed_generation: int | None = None


class IstioStatus(Model):
    """Status of Istio's CRDs: conditions and validation messages, nothing more is interpreted."""

    conditions: list[Condition] | None = None
    validation_messages: list[dict[str, Any]] | None = None
    observed_generation: int | str | None = None
