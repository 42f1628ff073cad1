"""`gateway.networking.k8s.io/v1` HTTPRoute.

Attached to a Gateway (ingress) or, in the mesh, to a Service (`parentRefs: [{group: "",
kind: Service, name: reviews}]`): ambient waypoints apply such routes to traffic for that
Service. Matches select requests by path, headers, query parameters and method; filters modify
them; backendRefs split them by weight.
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
    Duration,
    HeaderMatch,
    HeaderName,
    Hostname,
    Json,
    RouteStatus,
    SectionName,
    SessionPersistence,
    backend_ref_causes,
    duplicate_items,
    duration_ms,
    hostnames_column,
    parent_ref_causes,
    route_status_causes,
    rule_name_causes,
    session_persistence_causes,
    total_matches_causes,
)
from .http_filters import (
    HTTPMethod,
    HTTPRouteFilters,
    http_filter_list_causes,
    redirect_with_backends_causes,
)

# --- matches -----------------------------------------------------------------------------------


class HTTPPathMatch(Model):
    """Path match; type defaults to PathPrefix and value to `/`."""

    type: Literal["Exact", "PathPrefix", "RegularExpression"] | None = None
    value: Annotated[str, Field(max_length=1024)] | None = None


class HTTPQueryParamMatch(Model):
    type: Literal["Exact", "RegularExpression"] | None = None
    name: HeaderName
    value: Annotated[str, Field(min_length=1, max_length=1024)]


class HTTPRouteMatch(Model):
    """All conditions of one match must hold (AND); a rule's matches are alternatives (OR)."""

    path: HTTPPathMatch | None = None
    headers: Annotated[list[HeaderMatch], Field(max_length=16)] | None = None
    query_params: Annotated[list[HTTPQueryParamMatch], Field(max_length=16)] | None = None
    method: HTTPMethod | None = None


# --- rules -------------------------------------------------------------------------------------


class HTTPBackendRef(BackendRef):
    """A weighted backend, with filters applied only to requests sent to it."""

    filters: HTTPRouteFilters | None = None


class HTTPRouteTimeouts(Model):
    """Whole-request and per-backend-attempt timeouts; `0s` disables a timeout."""

    request: Duration | None = None
    backend_request: Duration | None = None


class HTTPRouteRetry(Model):
    codes: list[Annotated[int, Field(ge=400, le=599)]] | None = None
    attempts: int | None = None
    backoff: Duration | None = None


class HTTPRouteRule(Model):
    """Matches, filters and weighted backends; without matches a rule matches every request."""

    name: SectionName | None = None
    matches: Annotated[list[HTTPRouteMatch], Field(max_length=64)] | None = None
    filters: HTTPRouteFilters | None = None
    backend_refs: Annotated[list[HTTPBackendRef], Field(max_length=16)] | None = None
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None
    session_persistence: SessionPersistence | None = None


class HTTPRouteSpec(CommonRouteSpec):
    hostnames: Annotated[list[Hostname], Field(max_length=16)] | None = None
    rules: Annotated[list[HTTPRouteRule], Field(min_length=1, max_length=16)] | None = None


class HTTPRoute(KubeObject):
    """An HTTPRoute object."""

    spec: HTTPRouteSpec
    status: RouteStatus | None = None


# --- checks ------------------------------------------------------------------------------------

# Characters RFC 3986 allows in a path, percent-encodings included.
_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")
_BAD_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F", "#")
_BAD_SUFFIXES = ("/..", "/.")


def _path_value_causes(path: HTTPPathMatch, where: str) -> list[Cause]:
    # Rules for Exact/PathPrefix only; both defaults (PathPrefix, "/") count when unset.
    if (path.type or "PathPrefix") == "RegularExpression":
        return []
    value = "/" if path.value is None else path.value
    field = f"{where}.value"
    causes: list[Cause] = []
    if not value.startswith("/"):
        causes.append(
            invalid(field, value, "must be an absolute path and start with '/' for types Exact and PathPrefix")
        )
    causes += [invalid(field, value, f"must not contain '{seq}'") for seq in _BAD_SEQUENCES if seq in value]
    causes += [invalid(field, value, f"must not end with '{end}'") for end in _BAD_SUFFIXES if value.endswith(end)]
    if not _PATH_CHARS.match(value):
        causes.append(invalid(field, value, f"must only contain valid characters (matching {_PATH_CHARS.pattern})"))
    return causes


def _match_causes(match: HTTPRouteMatch, where: str) -> list[Cause]:
    causes = _path_value_causes(match.path, f"{where}.path") if match.path is not None else []
    # headers and queryParams are `listType=map` keyed by name: exact repeats are refused.
    causes += duplicate_items([h.name for h in match.headers or []], f"{where}.headers", ".name")
    causes += duplicate_items([q.name for q in match.query_params or []], f"{where}.queryParams", ".name")
    return causes


def _single_prefix_match(rule: HTTPRouteRule) -> bool:
    # Unset matches default to one `PathPrefix /` match; an unset path or type to PathPrefix.
    if rule.matches is None:
        return True
    if len(rule.matches) != 1:
        return False
    path = rule.matches[0].path
    return path is None or (path.type or "PathPrefix") == "PathPrefix"


def _timeouts_causes(timeouts: HTTPRouteTimeouts | None, where: str) -> list[Cause]:
    if timeouts is None or timeouts.request is None or timeouts.backend_request is None:
        return []
    request, backend = duration_ms(timeouts.request), duration_ms(timeouts.backend_request)
    if request != 0 and backend > request:
        why = f"backendRequest timeout cannot be longer than request timeout ({timeouts.request})"
        return [invalid(f"{where}.backendRequest", timeouts.backend_request, why)]
    return []


def _backend_refs_causes(rule: HTTPRouteRule, where: str, single_prefix: bool) -> list[Cause]:
    causes: list[Cause] = []
    for k, ref in enumerate(rule.backend_refs or []):
        ref_path = f"{where}.backendRefs[{k}]"
        causes += backend_ref_causes(ref, ref_path)
        causes += http_filter_list_causes(ref.filters or [], f"{ref_path}.filters", single_prefix)
    if rule.backend_refs:
        causes += redirect_with_backends_causes(rule.filters or [], f"{where}.filters")
    return causes


def _rule_causes(rule: HTTPRouteRule, where: str) -> list[Cause]:
    causes: list[Cause] = []
    for j, match in enumerate(rule.matches or []):
        causes += _match_causes(match, f"{where}.matches[{j}]")
    single_prefix = _single_prefix_match(rule)
    causes += http_filter_list_causes(rule.filters or [], f"{where}.filters", single_prefix)
    causes += _backend_refs_causes(rule, where, single_prefix)
    causes += _timeouts_causes(rule.timeouts, f"{where}.timeouts")
    if rule.retry is not None:
        causes += duplicate_items(rule.retry.codes or [], f"{where}.retry.codes")
    causes += session_persistence_causes(rule.session_persistence, f"{where}.sessionPersistence")
    return causes


def _http_route_check(obj: Json, model: HTTPRoute) -> list[Cause]:
    """The HTTPRoute CRD's CEL rules and the spec's rules on header modifiers."""
    spec = model.spec
    causes = parent_ref_causes(spec.parent_refs, "spec.parentRefs")
    rules = spec.rules or []
    causes += rule_name_causes([rule.name for rule in rules], "spec.rules")
    # A rule without matches gets one default match, which counts towards the total.
    causes += total_matches_causes([1 if r.matches is None else len(r.matches) for r in rules], "spec.rules")
    for i, rule in enumerate(rules):
        causes += _rule_causes(rule, f"spec.rules[{i}]")
    causes += route_status_causes(model.status)
    return causes


HTTP_ROUTE = ResourceKind(
    group=GATEWAY_GROUP,
    version="v1",
    kind="HTTPRoute",
    plural="httproutes",
    namespaced=True,
    model=HTTPRoute,
    categories=CATEGORIES,
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Hostnames", hostnames_column),
        age(),
    ),
    check=_http_route_check,
)
