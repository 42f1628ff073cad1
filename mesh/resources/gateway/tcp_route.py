"""`gateway.networking.k8s.io/v1alpha2` TCPRoute: forward connections to weighted backends.

TCPRoute is experimental; in ambient mode a waypoint applies it to L4 traffic for the Service
it is attached to.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..base import Cause, Model
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import KubeObject
from .common import (
    CATEGORIES,
    GATEWAY_GROUP,
    BackendRef,
    CommonRouteSpec,
    Json,
    RouteStatus,
    SectionName,
    backend_ref_causes,
    parent_ref_causes,
    route_status_causes,
    rule_name_causes,
)


class TCPRouteRule(Model):
    """Backends for connections; with none (or none valid) connections are refused."""

    name: SectionName | None = None
    backend_refs: Annotated[list[BackendRef], Field(min_length=1, max_length=16)] | None = None


class TCPRouteSpec(CommonRouteSpec):
    rules: Annotated[list[TCPRouteRule], Field(min_length=1, max_length=16)]


class TCPRoute(KubeObject):
    """A TCPRoute object."""

    spec: TCPRouteSpec
    status: RouteStatus | None = None


def _tcp_route_check(obj: Json, model: TCPRoute) -> list[Cause]:
    """ParentRefs distinct, rule names unique, Service backends with a port."""
    spec = model.spec
    causes = parent_ref_causes(spec.parent_refs, "spec.parentRefs")
    causes += rule_name_causes([rule.name for rule in spec.rules], "spec.rules")
    for i, rule in enumerate(spec.rules):
        for k, ref in enumerate(rule.backend_refs or []):
            causes += backend_ref_causes(ref, f"spec.rules[{i}].backendRefs[{k}]")
    causes += route_status_causes(model.status)
    return causes


TCP_ROUTE = ResourceKind(
    group=GATEWAY_GROUP,
    version="v1alpha2",
    kind="TCPRoute",
    plural="tcproutes",
    namespaced=True,
    model=TCPRoute,
    categories=CATEGORIES,
    status_subresource=True,
    columns=(Column("Name", jsonpath(".metadata.name"), format="name"), age()),
    check=_tcp_route_check,
)
