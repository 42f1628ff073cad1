"""`gateway.networking.k8s.io/v1` GRPCRoute: routing by gRPC service and method.

Like HTTPRoute it attaches to Gateways or, in the mesh, to Services; its filters are the
header modifiers, RequestMirror and ExtensionRef.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from ..base import Cause, Model, invalid
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import KubeObject
from .common import (
    CATEGORIES,
    GATEWAY_GROUP,
    BackendRef,
    CommonRouteSpec,
    HeaderMatch,
    Hostname,
    HTTPHeaderFilter,
    HTTPRequestMirrorFilter,
    Json,
    LocalObjectReference,
    RouteStatus,
    SectionName,
    SessionPersistence,
    backend_ref_causes,
    duplicate_items,
    filter_union_causes,
    header_filter_causes,
    hostnames_column,
    mirror_causes,
    parent_ref_causes,
    repeated_filter_causes,
    required_because,
    route_status_causes,
    rule_name_causes,
    session_persistence_causes,
    total_matches_causes,
)


class GRPCMethodMatch(Model):
    """`service` (e.g. `helloworld.Greeter`) and/or `method` (e.g. `SayHello`)."""

    type: Literal["Exact", "RegularExpression"] | None = None
    service: Annotated[str, Field(max_length=1024)] | None = None
    method: Annotated[str, Field(max_length=1024)] | None = None


class GRPCRouteMatch(Model):
    method: GRPCMethodMatch | None = None
    headers: Annotated[list[HeaderMatch], Field(max_length=16)] | None = None


class GRPCRouteFilter(Model):
    """One processing step; `type` selects which of the configuration fields applies."""

    type: Literal["ResponseHeaderModifier", "RequestHeaderModifier", "RequestMirror", "ExtensionRef"]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    extension_ref: LocalObjectReference | None = None


GRPCRouteFilters = Annotated[list[GRPCRouteFilter], Field(max_length=16)]


class GRPCBackendRef(BackendRef):
    filters: GRPCRouteFilters | None = None


class GRPCRouteRule(Model):
    """Matches, filters and weighted backends; without matches a rule matches every call."""

    name: SectionName | None = None
    matches: Annotated[list[GRPCRouteMatch], Field(max_length=8)] | None = None
    filters: GRPCRouteFilters | None = None
    backend_refs: Annotated[list[GRPCBackendRef], Field(max_length=16)] | None = None
    session_persistence: SessionPersistence | None = None


class GRPCRouteSpec(CommonRouteSpec):
    hostnames: Annotated[list[Hostname], Field(max_length=16)] | None = None
    rules: Annotated[list[GRPCRouteRule], Field(max_length=16)] | None = None


class GRPCRoute(KubeObject):
    """A GRPCRoute object (its spec is optional in the CRD)."""

    spec: GRPCRouteSpec | None = None
    status: RouteStatus | None = None


# --- checks ------------------------------------------------------------------------------------

_SERVICE = re.compile(r"^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$", re.IGNORECASE)
_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")
_MEMBERS = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestMirror": "request_mirror",
    "ExtensionRef": "extension_ref",
}
_ONCE = ("RequestHeaderModifier", "ResponseHeaderModifier")


def _method_causes(match: GRPCMethodMatch, where: str) -> list[Cause]:
    if match.service is None and match.method is None:
        return [required_because(where, "one or both of 'service' or 'method' must be specified")]
    if (match.type or "Exact") != "Exact":
        return []
    causes: list[Cause] = []
    if match.service is not None and not _SERVICE.match(match.service):
        why = f"service must be a protobuf service name (matching {_SERVICE.pattern})"
        causes.append(invalid(f"{where}.service", match.service, why))
    if match.method is not None and not _METHOD.match(match.method):
        causes.append(invalid(f"{where}.method", match.method, "method must match ^[A-Za-z_][A-Za-z_0-9]*$"))
    return causes


def _filter_list_causes(filters: list[GRPCRouteFilter], where: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, flt in enumerate(filters):
        path = f"{where}[{i}]"
        causes += filter_union_causes(flt, path, _MEMBERS)
        if flt.request_header_modifier is not None:
            causes += header_filter_causes(flt.request_header_modifier, f"{path}.requestHeaderModifier")
        if flt.response_header_modifier is not None:
            causes += header_filter_causes(flt.response_header_modifier, f"{path}.responseHeaderModifier")
        if flt.request_mirror is not None:
            causes += mirror_causes(flt.request_mirror, f"{path}.requestMirror")
    causes += repeated_filter_causes([flt.type for flt in filters], where, _ONCE)
    return causes


def _rule_causes(rule: GRPCRouteRule, where: str) -> list[Cause]:
    causes: list[Cause] = []
    for j, match in enumerate(rule.matches or []):
        if match.method is not None:
            causes += _method_causes(match.method, f"{where}.matches[{j}].method")
        names = [h.name for h in match.headers or []]
        causes += duplicate_items(names, f"{where}.matches[{j}].headers", ".name")
    causes += _filter_list_causes(rule.filters or [], f"{where}.filters")
    for k, ref in enumerate(rule.backend_refs or []):
        causes += backend_ref_causes(ref, f"{where}.backendRefs[{k}]")
        causes += _filter_list_causes(ref.filters or [], f"{where}.backendRefs[{k}].filters")
    causes += session_persistence_causes(rule.session_persistence, f"{where}.sessionPersistence")
    return causes


def _grpc_route_check(obj: Json, model: GRPCRoute) -> list[Cause]:
    """The GRPCRoute CRD's CEL rules and the spec's rules on header modifiers."""
    causes = route_status_causes(model.status)
    spec = model.spec
    if spec is None:
        return causes
    causes += parent_ref_causes(spec.parent_refs, "spec.parentRefs")
    rules = spec.rules or []
    causes += rule_name_causes([rule.name for rule in rules], "spec.rules")
    # Unlike HTTPRoute, GRPCRoute has no default match: a rule without matches counts 0.
    causes += total_matches_causes([len(rule.matches or []) for rule in rules], "spec.rules")
    for i, rule in enumerate(rules):
        causes += _rule_causes(rule, f"spec.rules[{i}]")
    return causes


GRPC_ROUTE = ResourceKind(
    group=GATEWAY_GROUP,
    version="v1",
    kind="GRPCRoute",
    plural="grpcroutes",
    namespaced=True,
    model=GRPCRoute,
    categories=CATEGORIES,
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Hostnames", hostnames_column),
        age(),
    ),
    check=_grpc_route_check,
)
