"""VirtualService (networking.istio.io/v1): the schema, the rules Istio's webhook applies to
the whole object (hosts, gateways, delegates, TLS and TCP routes) and the kind declaration.

HTTP routes carry most of the rules; they live in `http_route.py`.
"""

from __future__ import annotations

import re

from ..base import Cause, Labels, Model, forbidden, invalid
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import IstioStatus, KubeObject
from .checks import (
    check_export_to,
    check_gateway_names,
    check_route_destinations,
    ip_subnet_error,
    is_ip,
    is_jwt_claim,
    port_error,
    required_because,
    wildcard_domain_error,
)
from .common import (
    CATEGORIES,
    GROUP,
    VERSION,
    Destination,
    Int32,
    Json,
    UInt32,
    host_matches,
    host_subset_of,
    json_column,
    namespace_of,
)
from .http_route import HTTPRoute, check_http_route

# --- TLS and TCP routes --------------------------------------------------------------------------


class TLSMatchAttributes(Model):
    """Conditions on an unterminated TLS connection (SNI first of all)."""

    sni_hosts: list[str]
    destination_subnets: list[str] | None = None
    port: UInt32 | None = None
    source_labels: Labels | None = None
    gateways: list[str] | None = None
    source_namespace: str | None = None


class L4MatchAttributes(Model):
    """Conditions on a TCP connection."""

    destination_subnets: list[str] | None = None
    port: UInt32 | None = None
    source_subnet: str | None = None
    source_labels: Labels | None = None
    gateways: list[str] | None = None
    source_namespace: str | None = None


class RouteDestination(Model):
    """A weighted destination of a TLS or TCP route."""

    destination: Destination
    weight: Int32 | None = None


class TLSRoute(Model):
    """An SNI-routed rule for unterminated TLS."""

    match: list[TLSMatchAttributes]
    route: list[RouteDestination] | None = None


class TCPRoute(Model):
    """A rule for opaque TCP."""

    match: list[L4MatchAttributes] | None = None
    route: list[RouteDestination] | None = None


class VirtualServiceSpec(Model):
    """Routing rules for the traffic sent to `hosts`."""

    hosts: list[str] | None = None
    gateways: list[str] | None = None
    http: list[HTTPRoute] | None = None
    tls: list[TLSRoute] | None = None
    tcp: list[TCPRoute] | None = None
    export_to: list[str] | None = None


class VirtualService(KubeObject):
    """A VirtualService object."""

    spec: VirtualServiceSpec
    status: IstioStatus | None = None


# --- rules on the whole object -------------------------------------------------------------------

MESH_GATEWAY = "mesh"


def applies_to_gateway(spec: VirtualServiceSpec) -> bool:
    """True when the rules are bound to gateways only (gateways listed, `mesh` not among them)."""
    return bool(spec.gateways) and MESH_GATEWAY not in spec.gateways


def _delegate_causes(spec: VirtualServiceSpec) -> list[Cause]:
    # No hosts marks a delegate: only HTTP routes can be delegated, and gateways mean nothing.
    if spec.hosts:
        return []
    causes = []
    for field, value in (("gateways", spec.gateways), ("tls", spec.tls), ("tcp", spec.tcp)):
        if value:
            causes.append(forbidden(f"spec.{field}", "must be empty in a delegate VirtualService (one without hosts)"))
    return causes


def _host_error(host: str, to_gateway: bool, sni: bool) -> str | None:
    # Gateways see SNI names Istio generates for AUTO_PASSTHROUGH: outbound_.<port>_._.<host>.
    if to_gateway and sni and host.startswith("outbound_"):
        parts = host.split("_")
        if len(parts) >= 4 and re.search("[0-9]", parts[1]) and re.search("[a-zA-Z]", parts[3]):
            return None
        return "not of the form outbound_.<PORT>_._.<HOSTNAME>"
    problem = wildcard_domain_error(host)
    if problem and is_ip(host):
        return None
    if not problem and host == "*" and not to_gateway:
        return "the wildcard host * is not allowed for virtual services bound to the mesh"
    return problem


def _hosts_causes(spec: VirtualServiceSpec) -> list[Cause]:
    hosts = spec.hosts or []
    to_gateway = applies_to_gateway(spec)
    sni = any(m.sni_hosts for t in spec.tls or [] for m in t.match)
    causes = []
    for i, host in enumerate(hosts):
        problem = _host_error(host, to_gateway, sni)
        if problem:
            causes.append(invalid(f"spec.hosts[{i}]", host, problem))
    if causes:
        return causes
    for i, host in enumerate(hosts):
        for j in range(i + 1, len(hosts)):
            if host_matches(host, hosts[j]):
                causes.append(invalid(f"spec.hosts[{j}]", hosts[j], f"duplicates or overlaps spec.hosts[{i}] ({host})"))
    return causes


def _jwt_claim_causes(spec: VirtualServiceSpec) -> list[Cause]:
    # Envoy only has the JWT payload at gateways, where RequestAuthentication runs first.
    if applies_to_gateway(spec):
        return []
    causes = []
    for i, route in enumerate(spec.http or []):
        for j, match in enumerate(route.match or []):
            for field, keys in (("headers", match.headers), ("withoutHeaders", match.without_headers)):
                for key in filter(is_jwt_claim, keys or {}):
                    why = "JWT claim routing is only supported on gateways"
                    causes.append(invalid(f"spec.http[{i}].match[{j}].{field}.{key}", key, why))
    return causes


def _l4_match_causes(path: str, match: TLSMatchAttributes | L4MatchAttributes) -> list[Cause]:
    causes = []
    for k, subnet in enumerate(match.destination_subnets or []):
        problem = ip_subnet_error(subnet)
        if problem:
            causes.append(invalid(f"{path}.destinationSubnets[{k}]", subnet, problem))
    if match.port:
        problem = port_error(match.port)
        if problem:
            causes.append(invalid(f"{path}.port", match.port, problem))
    return causes + check_gateway_names(f"{path}.gateways", match.gateways)


def _sni_causes(path: str, sni: str, spec: VirtualServiceSpec) -> list[Cause]:
    problem = _host_error(sni, applies_to_gateway(spec), True)
    if problem:
        # An IP address is accepted here with a warning only.
        return [] if is_ip(sni) else [invalid(path, sni, problem)]
    if any(host_subset_of(sni, host) for host in spec.hosts or []):
        return []
    return [invalid(path, sni, "is not a subset of any of the virtual service hosts")]


def _tls_causes(spec: VirtualServiceSpec) -> list[Cause]:
    causes: list[Cause] = []
    for i, route in enumerate(spec.tls or []):
        path = f"spec.tls[{i}]"
        if not route.match:
            causes.append(required_because(f"{path}.match", "a TLS route needs at least one match"))
        for j, match in enumerate(route.match):
            if not match.sni_hosts:
                causes.append(
                    required_because(f"{path}.match[{j}].sniHosts", "a TLS match needs at least one SNI host")
                )
            for k, sni in enumerate(match.sni_hosts):
                causes += _sni_causes(f"{path}.match[{j}].sniHosts[{k}]", sni, spec)
            causes += _l4_match_causes(f"{path}.match[{j}]", match)
        if not route.route:
            causes.append(required_because(f"{path}.route", "a TLS route needs a destination"))
        causes += check_route_destinations(f"{path}.route", route.route or [])
    return causes


def _tcp_causes(spec: VirtualServiceSpec) -> list[Cause]:
    causes: list[Cause] = []
    for i, route in enumerate(spec.tcp or []):
        path = f"spec.tcp[{i}]"
        for j, match in enumerate(route.match or []):
            causes += _l4_match_causes(f"{path}.match[{j}]", match)
        if not route.route:
            causes.append(required_because(f"{path}.route", "a TCP route needs a destination"))
        causes += check_route_destinations(f"{path}.route", route.route or [])
    return causes


def check_virtual_service(obj: Json, model: VirtualService) -> list[Cause]:
    """The rules of Istio's ValidateVirtualService, each reported at its field."""
    spec = model.spec
    causes = _delegate_causes(spec)
    causes += check_gateway_names("spec.gateways", spec.gateways)
    causes += _jwt_claim_causes(spec)
    causes += _hosts_causes(spec)
    if not (spec.http or spec.tcp or spec.tls):
        causes.append(required_because("spec.http", "one of http, tcp or tls routes must be provided"))
    for i, route in enumerate(spec.http or []):
        causes += check_http_route(f"spec.http[{i}]", route, delegate=not spec.hosts)
    causes += _tls_causes(spec)
    causes += _tcp_causes(spec)
    causes += check_export_to("spec.exportTo", spec.export_to, namespace_of(obj))
    return causes


VIRTUAL_SERVICE = ResourceKind(
    group=GROUP,
    version=VERSION,
    kind="VirtualService",
    plural="virtualservices",
    namespaced=True,
    model=VirtualService,
    short_names=("vs",),
    categories=CATEGORIES,
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column(
            "Gateways",
            json_column(".spec.gateways"),
            description="The names of gateways and sidecars that should apply these routes",
        ),
        Column(
            "Hosts",
            json_column(".spec.hosts"),
            description="The destination hosts to which traffic is being sent",
        ),
        age(),
    ),
    check=check_virtual_service,
)
