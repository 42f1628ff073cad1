"""The v1 ServiceAccount kind: the identity (SPIFFE ID) a pod runs as."""

from __future__ import annotations

from typing import Any

from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import KubeObject

Json = dict[str, Any]


class ServiceAccount(KubeObject):
    secrets: list[Json] | None = None
    image_pull_secrets: list[Json] | None = None
    automount_service_account_token: bool | None = None


SERVICE_ACCOUNT = ResourceKind(
    group="",
    version="v1",
    kind="ServiceAccount",
    plural="serviceaccounts",
    namespaced=True,
    model=ServiceAccount,
    short_names=("sa",),
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Secrets", lambda o: len(o.get("secrets") or []), type="integer"),
        age(),
    ),
    strategic_merge=True,
    spec_fields=("secrets", "imagePullSecrets", "automountServiceAccountToken"),
)
