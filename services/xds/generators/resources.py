"""Names, lookup keys and wire wrapping of the ztunnel resources.

Resource names follow istio/istio: pilot/pkg/serviceregistry/ambient/helpers.go (reference
istio-ambient-protocols §1): a Workload is named by its uid, a Service by `namespace/hostname`, an
Authorization by `namespace/name`. On-demand subscriptions ask for `network/ip` or
`namespace/hostname`; `address_keys` lists the keys a resource answers to.
"""

from __future__ import annotations

import ipaddress

from google.protobuf import any_pb2
from google.protobuf.message import Message

from mesh.proto_gen.istio.security import authorization_pb2 as authz
from mesh.proto_gen.istio.workload import workload_pb2 as wl

CLUSTER_ID = "Kubernetes"  # Istio's default cluster id; part of every uid
ADDRESS_TYPE_URL = "type.googleapis.com/istio.workload.Address"
AUTHORIZATION_TYPE_URL = "type.googleapis.com/istio.security.Authorization"
DOMAIN_SUFFIX = "svc.cluster.local"


def pod_uid(namespace: str, name: str) -> str:
    """`Kubernetes//Pod/{ns}/{name}` (the empty segment is the core API group)."""
    return f"{CLUSTER_ID}//Pod/{namespace}/{name}"


def workload_entry_uid(namespace: str, name: str) -> str:
    """`Kubernetes/networking.istio.io/WorkloadEntry/{ns}/{name}`."""
    return f"{CLUSTER_ID}/networking.istio.io/WorkloadEntry/{namespace}/{name}"


def service_entry_uid(namespace: str, name: str, address: str) -> str:
    """`Kubernetes/networking.istio.io/ServiceEntry/{ns}/{name}/{address}`: one per inline endpoint."""
    return f"{CLUSTER_ID}/networking.istio.io/ServiceEntry/{namespace}/{name}/{address}"


def service_hostname(name: str, namespace: str) -> str:
    """A Kubernetes Service's hostname: `{name}.{ns}.svc.cluster.local`."""
    return f"{name}.{namespace}.{DOMAIN_SUFFIX}"


def resource_name(message: Message) -> str:
    """The xDS resource name of a Workload, Service or Authorization."""
    if isinstance(message, wl.Workload):
        return message.uid
    if isinstance(message, wl.Service):
        return f"{message.namespace}/{message.hostname}"
    if isinstance(message, authz.Authorization):
        return f"{message.namespace}/{message.name}"
    raise TypeError(f"not a ztunnel resource: {type(message).__name__}")


def ip_bytes(text: str) -> bytes | None:
    """The raw 4- or 16-byte form of an IP address; None when `text` is not one."""
    try:
        return ipaddress.ip_address(text).packed
    except ValueError:
        return None


def ip_text(raw: bytes) -> str:
    """The text form of a raw 4- or 16-byte address."""
    return str(ipaddress.ip_address(raw))


def address_keys(resource: Message) -> list[str]:
    """The on-demand lookup keys a Workload or Service answers to: `{network}/{ip}` for each address
    (an empty network gives `/10.0.0.1`), and `{ns}/{hostname}` for a Service."""
    if isinstance(resource, wl.Workload):
        return [f"{resource.network}/{ip_text(a)}" for a in resource.addresses]
    if isinstance(resource, wl.Service):
        keys = [f"{a.network}/{ip_text(a.address)}" for a in resource.addresses]
        return [*keys, resource_name(resource)]
    raise TypeError(f"not an Address resource: {type(resource).__name__}")


def to_any(message: Message) -> any_pb2.Any:
    """Pack a resource for the wire: a Workload or Service inside an `istio.workload.Address`, an
    Authorization as itself (type URLs of reference §1)."""
    out = any_pb2.Any()
    if isinstance(message, wl.Workload):
        out.Pack(wl.Address(workload=message), type_url_prefix="type.googleapis.com/")
    elif isinstance(message, wl.Service):
        out.Pack(wl.Address(service=message), type_url_prefix="type.googleapis.com/")
    elif isinstance(message, authz.Authorization):
        out.Pack(message, type_url_prefix="type.googleapis.com/")
    else:
        raise TypeError(f"not a ztunnel resource: {type(message).__name__}")
    return out


def type_url(message: Message) -> str:
    """The type URL a resource is served under."""
    return AUTHORIZATION_TYPE_URL if isinstance(message, authz.Authorization) else ADDRESS_TYPE_URL
