"""`gateway.networking.k8s.io/v1` Gateway: listeners bound to addresses.

In ambient mode a Gateway is also how a waypoint is declared: `gatewayClassName:
istio-waypoint` with one listener `{name: mesh, port: 15008, protocol: HBONE}`. HBONE is not a
core protocol; the ProtocolType pattern admits any un-prefixed alphanumeric name (core names
are reserved by convention, not by the schema) as well as domain-prefixed ones, so it validates
here exactly as the Gateway API CRD accepts it.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import Field

from ..base import Cause, Model, Port, duplicate, forbidden, invalid
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import Condition, KubeObject
from .common import (
    CATEGORIES,
    GATEWAY_GROUP,
    HOSTNAME_PATTERN,
    AddressType,
    AnnotationKey,
    AnnotationValue,
    Group,
    Hostname,
    Json,
    Kind,
    LabelSelector,
    LabelValue,
    ObjectName,
    ObjectReference,
    SecretObjectReference,
    SectionName,
    condition_causes,
    duplicate_items,
    is_hostname,
    required_because,
)

# Core names (HTTP, HTTPS, TLS, TCP, UDP) or implementation-specific ones: `HBONE`,
# `example.com/proto`. Used verbatim from the CRD, including its unanchored second branch.
ProtocolType = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|[a-z0-9]([-a-z0-9]*[a-z0-9])?"
        r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9]+$",
    ),
]

# --- listeners ---------------------------------------------------------------------------------


class FrontendTLSValidation(Model):
    """Client certificate validation (mutual TLS) against CA certificates."""

    ca_certificate_refs: Annotated[list[ObjectReference], Field(min_length=1, max_length=8)]
    mode: Literal["AllowValidOnly", "AllowInsecureFallback"] | None = None


class ListenerTLSConfig(Model):
    """TLS on a listener: terminate with certificates (default) or pass through by SNI."""

    mode: Literal["Terminate", "Passthrough"] | None = None
    certificate_refs: Annotated[list[SecretObjectReference], Field(max_length=64)] | None = None
    # Experimental in Gateway API v1.1-v1.3 (moved to spec.tls.frontend in v1.4); still accepted.
    frontend_validation: FrontendTLSValidation | None = None
    options: Annotated[dict[AnnotationKey, AnnotationValue], Field(max_length=16)] | None = None


class RouteNamespaces(Model):
    """Which namespaces may attach routes: All, Same (default) or Selector."""

    from_: Literal["All", "Selector", "Same"] | None = Field(default=None, alias="from")
    selector: LabelSelector | None = None


class RouteGroupKind(Model):
    """A route kind; group defaults to gateway.networking.k8s.io."""

    group: Group | None = None
    kind: Kind


class AllowedRoutes(Model):
    namespaces: RouteNamespaces | None = None
    kinds: Annotated[list[RouteGroupKind], Field(max_length=8)] | None = None


class Listener(Model):
    """A logical endpoint: a port, a protocol and optionally a hostname and TLS settings."""

    name: SectionName
    hostname: Hostname | None = None
    port: Port
    protocol: ProtocolType
    tls: ListenerTLSConfig | None = None
    allowed_routes: AllowedRoutes | None = None


# --- gateway-level settings --------------------------------------------------------------------


class GatewaySpecAddress(Model):
    """A requested address; type defaults to IPAddress, an empty value asks for assignment."""

    type: AddressType | None = None
    value: Annotated[str, Field(max_length=253)] | None = None


class LocalParametersReference(Model):
    group: Group
    kind: Kind
    name: Annotated[str, Field(min_length=1, max_length=253)]


class GatewayInfrastructure(Model):
    """Labels, annotations and parameters for what the implementation deploys."""

    labels: Annotated[dict[AnnotationKey, LabelValue], Field(max_length=8)] | None = None
    annotations: Annotated[dict[AnnotationKey, AnnotationValue], Field(max_length=16)] | None = None
    parameters_ref: LocalParametersReference | None = None


class ListenerNamespaces(Model):
    from_: Literal["All", "Selector", "Same", "None"] | None = Field(default=None, alias="from")
    selector: LabelSelector | None = None


class AllowedListeners(Model):
    """Which ListenerSets may attach to this Gateway (none by default)."""

    namespaces: ListenerNamespaces | None = None


class TLSConfig(Model):
    validation: FrontendTLSValidation | None = None


class TLSPortConfig(Model):
    port: Port
    tls: TLSConfig


class FrontendTLSConfig(Model):
    default: TLSConfig
    per_port: Annotated[list[TLSPortConfig], Field(max_length=64)] | None = None


class GatewayBackendTLS(Model):
    client_certificate_ref: SecretObjectReference | None = None


class GatewayTLSConfig(Model):
    """Gateway-wide TLS: client validation (frontend) and the client certificate (backend)."""

    backend: GatewayBackendTLS | None = None
    frontend: FrontendTLSConfig | None = None


class GatewaySpec(Model):
    gateway_class_name: ObjectName
    listeners: Annotated[list[Listener], Field(min_length=1, max_length=64)]
    addresses: Annotated[list[GatewaySpecAddress], Field(max_length=16)] | None = None
    infrastructure: GatewayInfrastructure | None = None
    allowed_listeners: AllowedListeners | None = None
    tls: GatewayTLSConfig | None = None


# --- status ------------------------------------------------------------------------------------


class GatewayStatusAddress(Model):
    type: AddressType | None = None
    value: Annotated[str, Field(min_length=1, max_length=253)]


class ListenerStatus(Model):
    name: SectionName
    supported_kinds: Annotated[list[RouteGroupKind], Field(max_length=8)] | None = None
    attached_routes: int
    conditions: Annotated[list[Condition], Field(max_length=8)]


class GatewayStatus(Model):
    addresses: Annotated[list[GatewayStatusAddress], Field(max_length=16)] | None = None
    conditions: Annotated[list[Condition], Field(max_length=8)] | None = None
    listeners: Annotated[list[ListenerStatus], Field(max_length=64)] | None = None
    attached_listener_sets: int | None = None


class Gateway(KubeObject):
    """A Gateway object (ingress, egress or an ambient waypoint)."""

    spec: GatewaySpec
    status: GatewayStatus | None = None


# --- checks ------------------------------------------------------------------------------------

_NO_TLS = ("HTTP", "TCP", "UDP")
_NEEDS_TLS = ("HTTPS", "TLS")
_NO_HOSTNAME = ("TCP", "UDP")


def _listener_tls_causes(listener: Listener, path: str) -> list[Cause]:
    # Core protocol names compare case-insensitively, as the CRD's `(?i)` rules do.
    protocol = listener.protocol.upper()
    tls = listener.tls
    if tls is None:
        if protocol in _NEEDS_TLS:
            return [required_because(f"{path}.tls", f"must be set for protocol {listener.protocol}")]
        return []
    if protocol in _NO_TLS:
        return [forbidden(f"{path}.tls", f"must not be specified for protocol {listener.protocol}")]
    causes: list[Cause] = []
    mode = tls.mode or "Terminate"
    if protocol == "HTTPS" and mode != "Terminate":
        causes.append(invalid(f"{path}.tls.mode", mode, "tls mode must be Terminate for protocol HTTPS"))
    if mode == "Terminate" and not tls.certificate_refs and not tls.options:
        why = "certificateRefs or options must be specified when mode is Terminate"
        causes.append(required_because(f"{path}.tls.certificateRefs", why))
    return causes


def _listener_causes(listeners: list[Listener]) -> list[Cause]:
    causes: list[Cause] = []
    combos: set[tuple[int, str, str | None]] = set()
    for i, listener in enumerate(listeners):
        path = f"spec.listeners[{i}]"
        causes += _listener_tls_causes(listener, path)
        if listener.protocol.upper() in _NO_HOSTNAME and listener.hostname is not None:
            causes.append(forbidden(f"{path}.hostname", f"must not be specified for protocol {listener.protocol}"))
        combo = (listener.port, listener.protocol, listener.hostname)
        if combo in combos:
            why = "combination of port, protocol and hostname must be unique for each listener"
            causes.append(invalid(path, listener.name, why))
        combos.add(combo)
    causes += duplicate_items([listener.name for listener in listeners], "spec.listeners", ".name")
    return causes


def _address_value_cause(kind: str, value: str, path: str) -> Cause | None:
    if kind == "IPAddress":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return invalid(path, value, "must be a valid IPv4 or IPv6 address for type IPAddress")
    elif kind == "Hostname" and not is_hostname(value):
        return invalid(path, value, f"must match {HOSTNAME_PATTERN} for type Hostname")
    return None


def _address_causes(addresses: list[Any], path: str, unique: bool) -> list[Cause]:
    """IPAddress values must be IPs, Hostname values hostnames; in the spec both are unique."""
    causes: list[Cause] = []
    seen: set[tuple[str, str]] = set()
    for i, address in enumerate(addresses):
        kind = address.type or "IPAddress"
        if address.value is None:
            continue
        cause = _address_value_cause(kind, address.value, f"{path}[{i}].value")
        if cause is not None:
            causes.append(cause)
        if unique and kind in ("IPAddress", "Hostname"):
            if (kind, address.value) in seen:
                causes.append(duplicate(f"{path}[{i}].value", address.value))
            seen.add((kind, address.value))
    return causes


def _status_causes(status: GatewayStatus) -> list[Cause]:
    causes = _address_causes(status.addresses or [], "status.addresses", unique=False)
    causes += condition_causes(status.conditions, "status.conditions")
    listeners = status.listeners or []
    causes += duplicate_items([entry.name for entry in listeners], "status.listeners", ".name")
    for i, entry in enumerate(listeners):
        causes += condition_causes(entry.conditions, f"status.listeners[{i}].conditions")
    return causes


def _gateway_check(obj: Json, model: Gateway) -> list[Cause]:
    """The Gateway CRD's CEL rules, plus TLS being required for HTTPS as the spec states."""
    spec = model.spec
    causes = _listener_causes(spec.listeners)
    causes += _address_causes(spec.addresses or [], "spec.addresses", unique=True)
    frontend = spec.tls.frontend if spec.tls else None
    if frontend is not None:
        ports = [entry.port for entry in frontend.per_port or []]
        causes += duplicate_items(ports, "spec.tls.frontend.perPort", ".port")
    if model.status is not None:
        causes += _status_causes(model.status)
    return causes


# --- printer columns ---------------------------------------------------------------------------


def _first_address(obj: Json) -> str | None:
    # The CRD column is `.status.addresses[*].value`; the API server prints the first result.
    addresses = (obj.get("status") or {}).get("addresses") or []
    first = addresses[0] if addresses else None
    return first.get("value") if isinstance(first, dict) else None


def _programmed(obj: Json) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Programmed":
            return cond.get("status")
    return None


GATEWAY = ResourceKind(
    group=GATEWAY_GROUP,
    version="v1",
    kind="Gateway",
    plural="gateways",
    namespaced=True,
    model=Gateway,
    short_names=("gtw",),
    categories=CATEGORIES,
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Class", jsonpath(".spec.gatewayClassName")),
        Column("Address", _first_address),
        Column("Programmed", _programmed),
        age(),
    ),
    check=_gateway_check,
)
