"""HTTPRoute filters: header modifiers, mirror, redirect, URL rewrite, CORS and extensionRef,
with the CRD's rules for a single filter and for a list of filters.

A filter is a discriminated union in the Kubernetes style: `type` names the one configuration
field that must be set. Filters appear on a rule and on each of its backendRefs; both places
follow the same rules.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..base import Cause, Model, Port, forbidden, invalid
from .common import (
    HeaderName,
    HTTPHeaderFilter,
    HTTPRequestMirrorFilter,
    LocalObjectReference,
    PreciseHostname,
    duplicate_items,
    filter_union_causes,
    header_filter_causes,
    mirror_causes,
    repeated_filter_causes,
    required_because,
)

HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
HTTPMethodWithWildcard = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*"]

CORSOrigin = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"(^\*$)|(^([a-zA-Z][a-zA-Z0-9+\-.]+):\/\/([^:/?#]+)(:([0-9]{1,5}))?$)",
    ),
]
"""`*` or `scheme://host[:port]`; the host may contain `*` wildcards."""


class HTTPPathModifier(Model):
    """Replace the whole path, or the part the rule's PathPrefix match matched."""

    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: Annotated[str, Field(max_length=1024)] | None = None
    replace_prefix_match: Annotated[str, Field(max_length=1024)] | None = None


class HTTPRequestRedirectFilter(Model):
    """Answers with a redirect (302 by default) instead of forwarding."""

    scheme: Literal["http", "https"] | None = None
    hostname: PreciseHostname | None = None
    path: HTTPPathModifier | None = None
    port: Port | None = None
    status_code: Literal[301, 302, 303, 307, 308] | None = None


class HTTPURLRewriteFilter(Model):
    """Rewrites the Host header and/or the path while forwarding."""

    hostname: PreciseHostname | None = None
    path: HTTPPathModifier | None = None


class HTTPCORSFilter(Model):
    """Cross-origin resource sharing answers."""

    allow_origins: Annotated[list[CORSOrigin], Field(max_length=64)] | None = None
    allow_credentials: bool | None = None
    allow_methods: Annotated[list[HTTPMethodWithWildcard], Field(max_length=9)] | None = None
    allow_headers: Annotated[list[HeaderName], Field(max_length=64)] | None = None
    expose_headers: Annotated[list[HeaderName], Field(max_length=64)] | None = None
    max_age: Annotated[int, Field(ge=1)] | None = None


class HTTPRouteFilter(Model):
    """One processing step; `type` selects which of the configuration fields applies."""

    type: Literal[
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "RequestRedirect",
        "URLRewrite",
        "ExtensionRef",
        "CORS",
    ]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = None
    cors: HTTPCORSFilter | None = None
    extension_ref: LocalObjectReference | None = None


HTTPRouteFilters = Annotated[list[HTTPRouteFilter], Field(max_length=16)]

_MEMBERS = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestMirror": "request_mirror",
    "RequestRedirect": "request_redirect",
    "URLRewrite": "url_rewrite",
    "CORS": "cors",
    "ExtensionRef": "extension_ref",
}
# RequestMirror and ExtensionRef may repeat; every other filter type at most once per list.
_ONCE = ("CORS", "RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")

# --- checks ------------------------------------------------------------------------------------


def _path_modifier_causes(mod: HTTPPathModifier, path: str, single_prefix_match: bool) -> list[Cause]:
    causes: list[Cause] = []
    for kind, attr, wire in (
        ("ReplaceFullPath", mod.replace_full_path, "replaceFullPath"),
        ("ReplacePrefixMatch", mod.replace_prefix_match, "replacePrefixMatch"),
    ):
        if attr is None and mod.type == kind:
            causes.append(required_because(f"{path}.{wire}", f"must be specified when type is set to '{kind}'"))
        elif attr is not None and mod.type != kind:
            causes.append(forbidden(f"{path}.{wire}", f"type must be '{kind}' when {wire} is set"))
    if mod.type == "ReplacePrefixMatch" and mod.replace_prefix_match is not None and not single_prefix_match:
        why = "replacePrefixMatch requires the rule to have exactly one match, of type PathPrefix"
        causes.append(invalid(f"{path}.replacePrefixMatch", mod.replace_prefix_match, why))
    return causes


def _star_alone(values: list[str] | None, path: str, what: str) -> list[Cause]:
    if values and "*" in values and len(values) > 1:
        return [invalid(path, "*", f"{what} cannot contain '*' alongside other values")]
    return []


def _cors_causes(cors: HTTPCORSFilter, path: str) -> list[Cause]:
    causes = _star_alone(cors.allow_origins, f"{path}.allowOrigins", "allowOrigins")
    causes += _star_alone(cors.allow_methods, f"{path}.allowMethods", "allowMethods")
    causes += _star_alone(cors.allow_headers, f"{path}.allowHeaders", "allowHeaders")
    # These lists are `listType=set`: no repeated entries.
    for wire, values in (
        ("allowOrigins", cors.allow_origins),
        ("allowMethods", cors.allow_methods),
        ("allowHeaders", cors.allow_headers),
        ("exposeHeaders", cors.expose_headers),
    ):
        causes += duplicate_items(values or [], f"{path}.{wire}")
    return causes


def http_filter_causes(flt: HTTPRouteFilter, path: str, single_prefix_match: bool) -> list[Cause]:
    """Rules for one filter at `path` (`single_prefix_match`: the rule has exactly one match
    and it is a PathPrefix match, which ReplacePrefixMatch needs)."""
    causes = filter_union_causes(flt, path, _MEMBERS)
    for wire, modifier in (
        ("requestHeaderModifier", flt.request_header_modifier),
        ("responseHeaderModifier", flt.response_header_modifier),
    ):
        if modifier is not None:
            causes += header_filter_causes(modifier, f"{path}.{wire}")
    if flt.request_mirror is not None:
        causes += mirror_causes(flt.request_mirror, f"{path}.requestMirror")
    for wire, action in (("requestRedirect", flt.request_redirect), ("urlRewrite", flt.url_rewrite)):
        if action is not None and action.path is not None:
            causes += _path_modifier_causes(action.path, f"{path}.{wire}.path", single_prefix_match)
    if flt.cors is not None:
        causes += _cors_causes(flt.cors, f"{path}.cors")
    return causes


def http_filter_list_causes(filters: list[HTTPRouteFilter], path: str, single_prefix_match: bool) -> list[Cause]:
    """Rules for a list of filters: each filter, repeats, and redirect-with-rewrite."""
    causes: list[Cause] = []
    for i, flt in enumerate(filters):
        causes += http_filter_causes(flt, f"{path}[{i}]", single_prefix_match)
    types = [flt.type for flt in filters]
    causes += repeated_filter_causes(types, path, _ONCE)
    if "RequestRedirect" in types and "URLRewrite" in types:
        # Report the later of the two: it is the one that made the combination.
        later = max(types.index("RequestRedirect"), types.index("URLRewrite"))
        why = "may specify either RequestRedirect or URLRewrite, but not both"
        causes.append(invalid(f"{path}[{later}].type", types[later], why))
    return causes


def redirect_with_backends_causes(filters: list[HTTPRouteFilter], path: str) -> list[Cause]:
    """A rule that redirects answers by itself: it may not also forward to backendRefs."""
    return [
        forbidden(
            f"{path}[{i}].requestRedirect",
            "RequestRedirect filter must not be used together with backendRefs",
        )
        for i, flt in enumerate(filters)
        if flt.request_redirect is not None
    ]
