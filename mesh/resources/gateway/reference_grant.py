"""`gateway.networking.k8s.io/v1beta1` ReferenceGrant: lets objects of other namespaces refer here.

A route's backendRef or a Gateway listener's certificateRef that crosses namespaces is honoured
only when a ReferenceGrant in the *target's* namespace allows references from the referrer's
namespace and kind to that kind (and name, when given). It has no status.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..base import Model
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import KubeObject
from .common import CATEGORIES, GATEWAY_GROUP, Group, Kind, Namespace, ObjectName


class ReferenceGrantFrom(Model):
    """Who may refer: objects of this group and kind in this namespace."""

    group: Group
    kind: Kind
    namespace: Namespace


class ReferenceGrantTo(Model):
    """What may be referred to in the grant's namespace: this group and kind, optionally one name."""

    group: Group
    kind: Kind
    name: ObjectName | None = None


class ReferenceGrantSpec(Model):
    from_: Annotated[list[ReferenceGrantFrom], Field(min_length=1, max_length=16)] = Field(alias="from")
    to: Annotated[list[ReferenceGrantTo], Field(min_length=1, max_length=16)]


class ReferenceGrant(KubeObject):
    """A ReferenceGrant object."""

    spec: ReferenceGrantSpec


REFERENCE_GRANT = ResourceKind(
    group=GATEWAY_GROUP,
    version="v1beta1",
    kind="ReferenceGrant",
    plural="referencegrants",
    namespaced=True,
    model=ReferenceGrant,
    short_names=("refgrant",),
    categories=CATEGORIES,
    columns=(Column("Name", jsonpath(".metadata.name"), format="name"), age()),
)
