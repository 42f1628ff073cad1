"""Shapes shared by the Gateway API kinds: name types, object references, header filters,
request mirroring, session persistence, route status, and the checks that go with them.

The string types carry the kubebuilder markers of the Gateway API (`apis/v1/shared_types.go`):
length limits and patterns. Pydantic's regex engine searches like Go's does (a pattern is not
implicitly anchored and `$` only matches at the very end), so the patterns are used verbatim,
quirks included. Cross-field rules (the CRDs' CEL `x-kubernetes-validations`) live in the
`*_causes` functions; every cause names the exact field it is about.

Defaults the CRDs declare (parentRef group `gateway.networking.k8s.io`, backendRef kind
`Service`, path type `PathPrefix`, ...) are never written into documents: the checks evaluate
the rules against the value a field *would* default to, as the API server evaluates CEL after
defaulting.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from pydantic.alias_generators import to_camel

from ..base import Cause, GatewayDuration, Model, Port, duplicate, forbidden, invalid
from ..meta import Condition

Json = dict[str, Any]

GATEWAY_GROUP = "gateway.networking.k8s.io"
CATEGORIES = ("gateway-api",)

# --- string types ------------------------------------------------------------------------------

_DNS = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
HOSTNAME_PATTERN = rf"^(\*\.)?{_DNS}$"
_HOSTNAME_RE = re.compile(HOSTNAME_PATTERN)


def _not_an_ip(value: str) -> str:
    # The patterns accept dotted digits; the spec says IPs are not hostnames.
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return value
    raise ValueError("must be a DNS name, not an IP address")


Group = Annotated[str, Field(max_length=253, pattern=rf"^$|^{_DNS}$")]
"""An API group: empty (the core group) or an RFC 1123 subdomain."""
Kind = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")]
ObjectName = Annotated[str, Field(min_length=1, max_length=253)]
Namespace = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
SectionName = Annotated[str, Field(min_length=1, max_length=253, pattern=rf"^{_DNS}$")]
"""A listener name, route rule name or Service port name."""
Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN), AfterValidator(_not_an_ip)]
"""A DNS name, optionally with a leading `*.` label; never an IP address."""
PreciseHostname = Annotated[str, Field(min_length=1, max_length=253, pattern=rf"^{_DNS}$"), AfterValidator(_not_an_ip)]
HeaderName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$")]
"""An HTTP header or query parameter name (RFC 7230 token)."""
HeaderValue = Annotated[str, Field(min_length=1, max_length=4096)]
GatewayController = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=rf"^{_DNS}\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"),
]
# The Go marker for AnnotationKey/LabelKey doubles the backslash before the dot (an upstream
# typo); the CEL rules on Gateway infrastructure use the intended `\.`, and so does this.
AnnotationKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=rf"^({_DNS}/)?([A-Za-z0-9][-A-Za-z0-9_.]{{0,61}})?[A-Za-z0-9]$",
    ),
]
AnnotationValue = Annotated[str, Field(max_length=4096)]
LabelValue = Annotated[str, Field(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]
AddressType = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=rf"^Hostname|IPAddress|NamedAddress|{_DNS}\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$",
    ),
]
Weight = Annotated[int, Field(ge=0, le=1_000_000)]
Duration = GatewayDuration

# --- references --------------------------------------------------------------------------------


class ParentReference(Model):
    """A route's parent: a Gateway (default) or, for mesh routes, a Service (`group: ""`)."""

    group: Group | None = None
    kind: Kind | None = None
    namespace: Namespace | None = None
    name: ObjectName
    section_name: SectionName | None = None
    port: Port | None = None


class LocalObjectReference(Model):
    """A same-namespace reference by group and kind (filter `extensionRef`)."""

    group: Group | None = None
    kind: Kind
    name: ObjectName


class SecretObjectReference(Model):
    """A reference defaulting to a core Secret (listener certificates)."""

    group: Group | None = None
    kind: Kind | None = None
    name: ObjectName
    namespace: Namespace | None = None


class ObjectReference(Model):
    """A fully specified reference (CA certificate ConfigMaps)."""

    group: Group
    kind: Kind
    name: ObjectName
    namespace: Namespace | None = None


class BackendObjectReference(Model):
    """Where traffic goes; kind defaults to Service in the core group."""

    group: Group | None = None
    kind: Kind | None = None
    name: ObjectName
    namespace: Namespace | None = None
    port: Port | None = None


class BackendRef(BackendObjectReference):
    """A backend with a traffic weight (defaults to 1)."""

    weight: Weight | None = None


class LabelSelectorRequirement(Model):
    key: str
    operator: str
    values: list[str] | None = None


class LabelSelector(Model):
    """metav1.LabelSelector as the CRDs embed it (no extra validation there either)."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


# --- header matching and modification, mirroring, session persistence --------------------------


class HeaderMatch(Model):
    """HTTPHeaderMatch and GRPCHeaderMatch have the same shape."""

    type: Literal["Exact", "RegularExpression"] | None = None
    name: HeaderName
    value: HeaderValue


class HTTPHeader(Model):
    name: HeaderName
    value: HeaderValue


class HTTPHeaderFilter(Model):
    """RequestHeaderModifier / ResponseHeaderModifier."""

    set: Annotated[list[HTTPHeader], Field(max_length=16)] | None = None
    add: Annotated[list[HTTPHeader], Field(max_length=16)] | None = None
    remove: Annotated[list[str], Field(max_length=16)] | None = None


class Fraction(Model):
    numerator: Annotated[int, Field(ge=0)]
    denominator: Annotated[int, Field(ge=1)] | None = None


class HTTPRequestMirrorFilter(Model):
    """RequestMirror: copies requests to another backend; responses are dropped."""

    backend_ref: BackendObjectReference
    percent: Annotated[int, Field(ge=0, le=100)] | None = None
    fraction: Fraction | None = None


class CookieConfig(Model):
    lifetime_type: Literal["Permanent", "Session"] | None = None


class SessionPersistence(Model):
    """Sticky sessions by cookie (default) or header."""

    session_name: Annotated[str, Field(max_length=128)] | None = None
    absolute_timeout: Duration | None = None
    idle_timeout: Duration | None = None
    type: Literal["Cookie", "Header"] | None = None
    cookie_config: CookieConfig | None = None


# --- routes: spec and status -------------------------------------------------------------------


class CommonRouteSpec(Model):
    """What every route kind has: the parents it attaches to."""

    parent_refs: Annotated[list[ParentReference], Field(max_length=32)] | None = None


class RouteParentStatus(Model):
    parent_ref: ParentReference
    controller_name: GatewayController
    conditions: Annotated[list[Condition], Field(min_length=1, max_length=8)]


class RouteStatus(Model):
    """Status of every route kind: one entry per (parent, controller)."""

    parents: Annotated[list[RouteParentStatus], Field(max_length=32)]


# --- cause helpers -----------------------------------------------------------------------------


def required_because(path: str, why: str) -> Cause:
    """A `FieldValueRequired` cause with a detail, as apimachinery's `field.Required(path, why)`."""
    return Cause(path, "FieldValueRequired", f"Required value: {why}")


def not_supported(path: str, value: str, choices: Sequence[str]) -> Cause:
    """A `FieldValueNotSupported` cause listing the accepted values."""
    supported = ", ".join(json.dumps(c) for c in choices)
    return Cause(
        path,
        "FieldValueNotSupported",
        f"Unsupported value: {json.dumps(value)}: supported values: {supported}",
    )


def duplicate_items(values: Iterable[Any], path: str, suffix: str = "") -> list[Cause]:
    """Duplicate causes for repeated values of a `listType=set`/`map` list (`path[i]suffix`)."""
    seen: set[Any] = set()
    causes = []
    for i, value in enumerate(values):
        if value is None:
            continue
        if value in seen:
            causes.append(duplicate(f"{path}[{i}]{suffix}", value))
        seen.add(value)
    return causes


# --- shared checks -----------------------------------------------------------------------------


def _parent_key(ref: ParentReference) -> tuple[str, str, str, str]:
    # CEL compares defaulted group/kind; an unset and an empty namespace are the same.
    group = GATEWAY_GROUP if ref.group is None else ref.group
    return (group, ref.kind or "Gateway", ref.namespace or "", ref.name)


def parent_ref_causes(refs: list[ParentReference] | None, path: str) -> list[Cause]:
    """ParentRefs must be distinct: several references to one parent each set sectionName
    and/or port the same way, with different values (CommonRouteSpec CEL rules)."""
    causes: list[Cause] = []
    first: dict[tuple[str, str, str, str], ParentReference] = {}
    seen: set[tuple[Any, ...]] = set()
    for i, ref in enumerate(refs or []):
        key = _parent_key(ref)
        other = first.setdefault(key, ref)
        same_fields = (ref.section_name is None) == (other.section_name is None) and (ref.port is None) == (
            other.port is None
        )
        if not same_fields:
            why = (
                "sectionName or port must be specified when parentRefs includes 2 or more references to the same parent"
            )
            causes.append(invalid(f"{path}[{i}]", ref.name, why))
        elif (*key, ref.section_name, ref.port) in seen:
            why = "sectionName or port must be unique when parentRefs includes 2 or more references to the same parent"
            causes.append(invalid(f"{path}[{i}]", ref.name, why))
        seen.add((*key, ref.section_name, ref.port))
    return causes


def backend_ref_causes(ref: BackendObjectReference, path: str) -> list[Cause]:
    """A core-group Service backend (the default) must name its port."""
    if not ref.group and (ref.kind or "Service") == "Service" and ref.port is None:
        return [required_because(f"{path}.port", "must have port for Service reference")]
    return []


def header_filter_causes(flt: HTTPHeaderFilter, path: str) -> list[Cause]:
    """Only one action per header name across set, add and remove (names are case-insensitive)."""
    causes: list[Cause] = []
    actions: dict[str, str] = {}
    entries = [
        ("set", [h.name for h in flt.set or []], ".name"),
        ("add", [h.name for h in flt.add or []], ".name"),
    ]
    entries.append(("remove", list(flt.remove or []), ""))
    for action, names, suffix in entries:
        for i, name in enumerate(names):
            where = f"{path}.{action}[{i}]{suffix}"
            earlier = actions.get(name.lower())
            if earlier == action:
                causes.append(duplicate(where, name))
            elif earlier is not None:
                causes.append(
                    invalid(
                        where,
                        name,
                        f"header is already modified by `{earlier}`; only one action is permitted per header",
                    )
                )
            actions.setdefault(name.lower(), action)
    return causes


def mirror_causes(mirror: HTTPRequestMirrorFilter, path: str) -> list[Cause]:
    """RequestMirror: a Service port, percent xor fraction, numerator <= denominator (default 100)."""
    causes = backend_ref_causes(mirror.backend_ref, f"{path}.backendRef")
    if mirror.percent is not None and mirror.fraction is not None:
        causes.append(forbidden(f"{path}.fraction", "only one of percent or fraction may be specified"))
    frac = mirror.fraction
    if frac is not None and frac.numerator > (100 if frac.denominator is None else frac.denominator):
        causes.append(
            invalid(
                f"{path}.fraction.numerator",
                frac.numerator,
                "numerator must be less than or equal to denominator",
            )
        )
    return causes


def session_persistence_causes(sp: SessionPersistence | None, path: str) -> list[Cause]:
    """Permanent cookies need an absoluteTimeout; cookieConfig only goes with type Cookie."""
    if sp is None:
        return []
    causes: list[Cause] = []
    lifetime = sp.cookie_config.lifetime_type if sp.cookie_config else None
    if lifetime == "Permanent" and sp.absolute_timeout is None:
        causes.append(
            required_because(f"{path}.absoluteTimeout", "must be specified when cookie lifetimeType is Permanent")
        )
    if sp.cookie_config is not None and (sp.type or "Cookie") != "Cookie":
        causes.append(forbidden(f"{path}.cookieConfig", "may only be set with type Cookie"))
    return causes


def filter_union_causes(flt: Any, path: str, members: dict[str, str]) -> list[Cause]:
    """A filter's `type` names exactly one configuration field: that field must be set and the
    others must not. `members` maps each type to its (snake_case) attribute."""
    causes: list[Cause] = []
    kind = flt.type
    for member_type, attr in members.items():
        field = f"{path}.{to_camel(attr)}"
        is_set = getattr(flt, attr) is not None
        if is_set and kind != member_type:
            causes.append(forbidden(field, f"must not be set when filter type is {kind}, only for {member_type}"))
        elif not is_set and kind == member_type:
            causes.append(required_because(field, f"must be specified for {member_type} filter type"))
    return causes


def repeated_filter_causes(types: list[str], path: str, once: Iterable[str]) -> list[Cause]:
    """Filter types that may appear at most once in a list (`path[i].type`)."""
    causes: list[Cause] = []
    limited, seen = set(once), set()
    for i, kind in enumerate(types):
        if kind in limited and kind in seen:
            causes.append(invalid(f"{path}[{i}].type", kind, f"{kind} filter cannot be repeated"))
        seen.add(kind)
    return causes


def rule_name_causes(names: list[str | None], path: str) -> list[Cause]:
    """Rule names, when set, are unique within the route."""
    return duplicate_items(names, path, ".name")


def total_matches_causes(counts: list[int], path: str) -> list[Cause]:
    """At most 128 matches across all rules (16 rules x 64 matches would be too many)."""
    total = sum(counts)
    if total > 128:
        why = "the total number of matches across all rules in a route must be at most 128"
        return [invalid(path, total, why)]
    return []


_CONDITION_STATUSES = ("True", "False", "Unknown")


def condition_causes(conditions: list[Condition] | None, path: str) -> list[Cause]:
    """metav1.Condition lists: keyed by type, status True/False/Unknown."""
    causes = duplicate_items([c.type for c in conditions or []], path, ".type")
    for i, cond in enumerate(conditions or []):
        if cond.status not in _CONDITION_STATUSES:
            causes.append(not_supported(f"{path}[{i}].status", cond.status, _CONDITION_STATUSES))
    return causes


def route_status_causes(status: RouteStatus | None) -> list[Cause]:
    """Checks on `status.parents` shared by all route kinds."""
    causes: list[Cause] = []
    for i, parent in enumerate(status.parents if status else []):
        causes += condition_causes(parent.conditions, f"status.parents[{i}].conditions")
    return causes


# --- helpers for checks and columns ------------------------------------------------------------

_DURATION_PART = re.compile(r"([0-9]+)(ms|h|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def duration_ms(value: str) -> int:
    """Milliseconds in a (valid) Gateway API duration such as `1h30m` or `500ms`."""
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION_PART.findall(value))


def is_hostname(value: str) -> bool:
    """Whether `value` matches the Gateway API Hostname pattern (wildcard allowed)."""
    return bool(_HOSTNAME_RE.match(value))


def hostnames_column(obj: Json) -> str | None:
    """The HOSTNAMES column: `.spec.hostnames` printed as JSON, as the API server prints lists."""
    hostnames = (obj.get("spec") or {}).get("hostnames")
    if not hostnames:
        return None
    return json.dumps(hostnames, separators=(",", ":"))
