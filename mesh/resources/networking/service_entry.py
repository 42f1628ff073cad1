"""ServiceEntry and WorkloadEntry (networking.istio.io/v1).

A ServiceEntry adds a service to the mesh's registry; its `endpoints` have the shape of a
WorkloadEntry spec, so both kinds share that model and most of its rules (Istio's
ValidateServiceEntry and ValidateWorkloadEntry).
"""

from __future__ import annotations

import posixpath
from typing import Literal

from ..base import Cause, Labels, Model, duplicate, forbidden, invalid
from ..kind import Column, ResourceKind, age, jsonpath
from ..meta import IstioStatus, KubeObject
from .checks import (
    check_export_to,
    check_selector_labels,
    dns_label_ok,
    fqdn_error,
    ip_subnet_error,
    is_ip,
    port_error,
    required_because,
    wildcard_domain_error,
)
from .common import (
    CATEGORIES,
    GROUP,
    VERSION,
    Json,
    UInt32,
    WorkloadLabelSelector,
    json_column,
    namespace_of,
)

UNIX_PREFIX = "unix://"

# Istio's protocol names (matched case-insensitively); an empty protocol means "sniff".
PROTOCOLS = (
    "TCP",
    "UDP",
    "GRPC",
    "GRPC-Web",
    "HTTP",
    "HTTP_PROXY",
    "HTTP2",
    "HTTPS",
    "TLS",
    "Mongo",
    "Redis",
    "MySQL",
)
_HTTP_PROTOCOLS = {"http", "http2", "http_proxy", "grpc", "grpc-web"}
_TLS_PROTOCOLS = {"https", "tls"}

# --- schema --------------------------------------------------------------------------------------


class ServicePort(Model):
    """A port of a ServiceEntry."""

    number: UInt32
    protocol: str | None = None
    name: str
    target_port: UInt32 | None = None


class WorkloadEntrySpec(Model):
    """A workload outside Kubernetes (a VM, a bare-metal host) or a ServiceEntry endpoint."""

    address: str | None = None
    ports: dict[str, UInt32] | None = None
    labels: Labels | None = None
    network: str | None = None
    locality: str | None = None
    weight: UInt32 | None = None
    service_account: str | None = None


class ServiceEntrySpec(Model):
    """A service in the registry: hosts, ports, where it lives and how it resolves."""

    hosts: list[str]
    addresses: list[str] | None = None
    ports: list[ServicePort] | None = None
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] | None = None
    endpoints: list[WorkloadEntrySpec] | None = None
    workload_selector: WorkloadLabelSelector | None = None
    export_to: list[str] | None = None
    subject_alt_names: list[str] | None = None


class ServiceEntry(KubeObject):
    """A ServiceEntry object."""

    spec: ServiceEntrySpec
    status: IstioStatus | None = None


class WorkloadEntry(KubeObject):
    """A WorkloadEntry object."""

    spec: WorkloadEntrySpec
    status: IstioStatus | None = None


# --- workload entries ----------------------------------------------------------------------------


def _unix_path_error(path: str) -> str | None:
    if not path:
        return "a unix address must not be empty"
    if path.startswith("@"):
        return None  # abstract socket
    if not posixpath.isabs(path) or path.endswith("/"):
        return "a unix address must be an absolute path to a file"
    return None


def _address_causes(path: str, we: WorkloadEntrySpec, *, allow_fqdn: bool) -> list[Cause]:
    address = we.address or ""
    if address.startswith(UNIX_PREFIX):
        causes = []
        problem = _unix_path_error(address.removeprefix(UNIX_PREFIX))
        if problem:
            causes.append(invalid(f"{path}.address", address, problem))
        if we.ports:
            causes.append(forbidden(f"{path}.ports", "a unix domain socket endpoint has no ports"))
        return causes
    if not address or is_ip(address):
        return []
    if not allow_fqdn:
        return [invalid(f"{path}.address", address, "must be an IP address (or unix://) for STATIC resolution")]
    if fqdn_error(address):
        return [invalid(f"{path}.address", address, "must be an IP address or a fully qualified domain name")]
    return []


def _endpoint_port_causes(path: str, we: WorkloadEntrySpec, service_ports: set[str] | None) -> list[Cause]:
    causes = []
    for name, number in (we.ports or {}).items():
        if service_ports is not None and name not in service_ports:
            causes.append(invalid(f"{path}.ports.{name}", number, "no port of the ServiceEntry has this name"))
        if not dns_label_ok(name):
            causes.append(invalid(f"{path}.ports", name, "port names must be DNS labels"))
        if port_error(number):
            causes.append(invalid(f"{path}.ports.{name}", number, "port number must be in the range 1..65535"))
    return causes


def check_workload_entry_spec(
    path: str, we: WorkloadEntrySpec, service_ports: set[str] | None = None, *, allow_fqdn: bool = True
) -> list[Cause]:
    """Istio's validateWorkloadEntry; `service_ports` are the port names of the owning ServiceEntry."""
    if not we.address and not we.network:
        # Without a network there is no gateway to reach an address-less workload through.
        return [required_because(f"{path}.address", "an address is required unless network is set")]
    causes = _address_causes(path, we, allow_fqdn=allow_fqdn)
    causes += _endpoint_port_causes(path, we, service_ports)
    unix = (we.address or "").startswith(UNIX_PREFIX)
    if unix and service_ports is not None and len(service_ports) != 1:
        causes.append(invalid(f"{path}.address", we.address, "a unix socket endpoint needs exactly one service port"))
    return causes


def check_workload_entry(obj: Json, model: WorkloadEntry) -> list[Cause]:
    """The rules of Istio's ValidateWorkloadEntry."""
    return check_workload_entry_spec("spec", model.spec)


# --- service entries -----------------------------------------------------------------------------


def _host_causes(spec: ServiceEntrySpec) -> list[Cause]:
    if not spec.hosts:
        return [required_because("spec.hosts", "a ServiceEntry needs at least one host")]
    causes = []
    for i, host in enumerate(spec.hosts):
        problem = "the wildcard host * is not allowed" if host == "*" else wildcard_domain_error(host)
        if problem:
            causes.append(invalid(f"spec.hosts[{i}]", host, problem))
    return causes


def _address_list_causes(spec: ServiceEntrySpec) -> list[Cause]:
    causes = []
    for i, address in enumerate(spec.addresses or []):
        problem = ip_subnet_error(address)
        if problem:
            causes.append(invalid(f"spec.addresses[{i}]", address, problem))
        elif "/" in address and spec.resolution not in (None, "NONE", "STATIC"):
            why = "CIDR addresses are allowed only for NONE and STATIC resolution"
            causes.append(invalid(f"spec.addresses[{i}]", address, why))
    return causes


def _port_causes(ports: list[ServicePort]) -> list[Cause]:
    causes: list[Cause] = []
    names: set[str] = set()
    numbers: set[int] = set()
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        if port.name in names:
            causes.append(duplicate(f"{path}.name", port.name))
        if port.number in numbers:
            causes.append(duplicate(f"{path}.number", port.number))
        names.add(port.name)
        numbers.add(port.number)
        if not dns_label_ok(port.name):
            causes.append(invalid(f"{path}.name", port.name, "a port name must be a DNS label"))
        if port.protocol and port.protocol.lower() not in {p.lower() for p in PROTOCOLS}:
            causes.append(invalid(f"{path}.protocol", port.protocol, f"supported protocols: {', '.join(PROTOCOLS)}"))
        if port_error(port.number):
            causes.append(invalid(f"{path}.number", port.number, "port number must be in the range 1..65535"))
        # targetPort 0 means "same as number".
        if port.target_port and port_error(port.target_port):
            causes.append(invalid(f"{path}.targetPort", port.target_port, "port number must be in the range 1..65535"))
    return causes


def _dns_endpoint_causes(path: str, we: WorkloadEntrySpec, service_ports: set[str]) -> list[Cause]:
    # With DNS resolution an endpoint address is a name to resolve (or an IP); never a socket.
    address = we.address or ""
    causes = []
    if not is_ip(address) and fqdn_error(address):
        causes.append(invalid(f"{path}.address", address, "must be an IP address or a fully qualified domain name"))
    return causes + _endpoint_port_causes(path, we, service_ports)


def _resolution_causes(spec: ServiceEntrySpec) -> list[Cause]:
    endpoints = spec.endpoints or []
    service_ports = {p.name for p in spec.ports or []}
    resolution = spec.resolution or "NONE"
    if resolution == "NONE":
        return [forbidden("spec.endpoints", "no endpoints may be given when resolution is NONE")] if endpoints else []
    if resolution == "STATIC":
        causes = []
        for i, we in enumerate(endpoints):
            causes += check_workload_entry_spec(f"spec.endpoints[{i}]", we, service_ports, allow_fqdn=False)
        return causes
    causes = []
    if not endpoints:
        # Without endpoints the hosts themselves are resolved, so each must be a real name.
        for i, host in enumerate(spec.hosts):
            if fqdn_error(host):
                why = f"must be a full name (no wildcard) for {resolution} resolution without endpoints"
                causes.append(invalid(f"spec.hosts[{i}]", host, why))
    if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
        causes.append(
            invalid("spec.endpoints", len(endpoints), "DNS_ROUND_ROBIN resolution takes at most one endpoint")
        )
    for i, we in enumerate(endpoints):
        causes += _dns_endpoint_causes(f"spec.endpoints[{i}]", we, service_ports)
    return causes


def _multi_host_causes(spec: ServiceEntrySpec) -> list[Cause]:
    # Plain TCP carries no host name, so several hosts on one TCP port cannot be told apart.
    if (spec.resolution or "NONE") == "NONE" or len(spec.hosts) < 2:
        return []
    for i, port in enumerate(spec.ports or []):
        protocol = (port.protocol or "").lower()
        if protocol not in _HTTP_PROTOCOLS | _TLS_PROTOCOLS:
            why = "several hosts need HTTP or TLS ports unless resolution is NONE"
            return [invalid(f"spec.ports[{i}].protocol", port.protocol or "", why)]
    return []


def check_service_entry(obj: Json, model: ServiceEntry) -> list[Cause]:
    """The rules of Istio's ValidateServiceEntry, each reported at its field."""
    spec = model.spec
    causes: list[Cause] = []
    if spec.workload_selector is not None:
        causes += check_selector_labels("spec.workloadSelector.labels", spec.workload_selector.labels)
        if spec.endpoints is not None:
            causes.append(forbidden("spec.endpoints", "may not be set together with workloadSelector"))
    causes += _host_causes(spec)
    causes += _address_list_causes(spec)
    causes += _port_causes(spec.ports or [])
    causes += _resolution_causes(spec)
    causes += _multi_host_causes(spec)
    causes += check_export_to("spec.exportTo", spec.export_to, namespace_of(obj), service_entry=True)
    return causes


SERVICE_ENTRY = ResourceKind(
    group=GROUP,
    version=VERSION,
    kind="ServiceEntry",
    plural="serviceentries",
    namespaced=True,
    model=ServiceEntry,
    short_names=("se",),
    categories=CATEGORIES,
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        Column("Hosts", json_column(".spec.hosts"), description="The hosts associated with the ServiceEntry"),
        Column(
            "Location",
            jsonpath(".spec.location"),
            description="MESH_EXTERNAL or MESH_INTERNAL: whether the service is part of the mesh",
        ),
        Column(
            "Resolution",
            jsonpath(".spec.resolution"),
            description="Service resolution mode for the hosts (NONE, STATIC, or DNS)",
        ),
        age(),
    ),
    check=check_service_entry,
)

WORKLOAD_ENTRY = ResourceKind(
    group=GROUP,
    version=VERSION,
    kind="WorkloadEntry",
    plural="workloadentries",
    namespaced=True,
    model=WorkloadEntry,
    short_names=("we",),
    categories=CATEGORIES,
    status_subresource=True,
    columns=(
        Column("Name", jsonpath(".metadata.name"), format="name"),
        age(),
        Column("Address", jsonpath(".spec.address"), description="Address associated with the network endpoint."),
    ),
    check=check_workload_entry,
)
