"""The state store: every workload, service and policy ztunnel knows, with named indexes.

Thread-safety and mutation contract (STYLE, after go-control-plane):
- `apply` converts every resource *before* taking the lock, then removes and inserts under it in
  one step, so a reader never sees half an xDS response;
- every read takes the lock too (cheap when uncontended), so the admin server or a thread may read
  while the xDS client applies;
- what is returned is immutable domain objects: a caller may keep them after the lock is released.

xDS handling follows istio/ztunnel: src/state.rs and src/xds.rs: good resources in a response are
applied and bad ones rejected one by one (the client NACKs with "name: reason" joined by "; "),
a rejected resource keeps its previous value, and a removal names either a workload uid or a
service key, whichever the store holds.
"""

from __future__ import annotations

import ipaddress
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from mesh.proto_gen.istio.security import authorization_pb2 as authz
from mesh.proto_gen.istio.workload import workload_pb2 as wl

from . import load_balancing
from .address import IpAddress, NetworkAddress
from .errors import ResourceError
from .indexes import GLOBAL_BUCKET, PolicyIndex, ServiceIndex, WorkloadIndex
from .load_balancing import Endpoint
from .policy import Policy
from .service import Service
from .workload import Workload

ADDRESS_TYPE_URL = "type.googleapis.com/istio.workload.Address"
AUTHORIZATION_TYPE_URL = "type.googleapis.com/istio.security.Authorization"


@dataclass(frozen=True)
class Rejection:
    """A resource left out of an update, and why; `str()` is the NACK's "name: reason" form."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def _unpack(resource: object, message: Message) -> Message:
    """An `Any` unpacked into `message`'s type; a message of that type passes as is."""
    if isinstance(resource, type(message)):
        return resource
    if not isinstance(resource, any_pb2.Any):
        raise ResourceError(f"expected {message.DESCRIPTOR.full_name}, got {type(resource).__name__}")
    try:
        if not resource.Unpack(message):
            raise ResourceError(f"expected {message.DESCRIPTOR.full_name}, got {resource.type_url}")
    except DecodeError as e:
        raise ResourceError(f"cannot decode {message.DESCRIPTOR.full_name}: {e}") from None
    return message


def convert_address(name: str, resource: object) -> Workload | Service:
    """An `istio.workload.Address` (or a bare Workload or Service) as a domain object whose
    resource name must be `name`: the uid of a workload, `ns/hostname` of a service."""
    if isinstance(resource, wl.Workload | wl.Service):
        resource = wl.Address(workload=resource) if isinstance(resource, wl.Workload) else wl.Address(service=resource)
    address = _unpack(resource, wl.Address())
    kind = address.WhichOneof("type")
    if kind == "workload":
        converted: Workload | Service = Workload.from_proto(address.workload)
        own_name = converted.uid
    elif kind == "service":
        converted = Service.from_proto(address.service)
        own_name = converted.key
    else:
        raise ResourceError("an Address holds neither a workload nor a service")
    if own_name != name:
        raise ResourceError(f"the resource name differs from the {kind}'s own name {own_name!r}")
    return converted


def convert_policy(name: str, resource: object) -> Policy:
    """An `istio.security.Authorization` as a Policy whose `ns/name` must be `name`."""
    policy = Policy.from_proto(_unpack(resource, authz.Authorization()))
    if policy.key != name:
        raise ResourceError(f"the resource name differs from the policy's own name {policy.key!r}")
    return policy


_CONVERTERS = {ADDRESS_TYPE_URL: convert_address, AUTHORIZATION_TYPE_URL: convert_policy}


class StateStore:
    """Workloads, services and policies, indexed for the data path (see the module docstring)."""

    def __init__(self, rng: random.Random | None = None):
        self._lock = threading.Lock()
        self._workloads = WorkloadIndex()
        self._services = ServiceIndex()
        self._policies = PolicyIndex()
        self._rng = rng or random.Random()

    # --- updates ---------------------------------------------------------------------------------

    def apply(self, type_url: str, updated: Mapping[str, object], removed: Iterable[str] = ()) -> list[Rejection]:
        """Apply one xDS response: resources by name (protobuf `Any` as received, or messages) and
        removed names. Returns the rejected resources; everything else is applied atomically."""
        convert = _CONVERTERS.get(type_url)
        if convert is None:
            return [Rejection(name, f"ztunnel does not handle type {type_url}") for name in updated]
        good: list[Workload | Service | Policy] = []
        rejected = []
        for name, resource in updated.items():
            try:
                good.append(convert(name, resource))
            except ResourceError as e:
                rejected.append(Rejection(name, str(e)))
        with self._lock:
            for name in removed:
                self._remove(type_url, name)
            for item in good:
                self._insert(item)
        return rejected

    def _remove(self, type_url: str, name: str) -> None:
        if type_url == AUTHORIZATION_TYPE_URL:
            self._policies.remove(name)
        elif self._workloads.remove(name) is None:
            self._services.remove(name)

    def _insert(self, item: Workload | Service | Policy) -> None:
        if isinstance(item, Workload):
            self._workloads.insert(item)
        elif isinstance(item, Service):
            self._services.insert(item)
        else:
            self._policies.insert(item)

    # --- workloads -------------------------------------------------------------------------------

    def workload(self, uid: str) -> Workload | None:
        with self._lock:
            return self._workloads.by_uid.get(uid)

    def workload_by_ip(self, ip: IpAddress | str, network: str = "") -> Workload | None:
        """The workload holding `ip` on `network` (the newest claimant when several do)."""
        key = NetworkAddress(network, ipaddress.ip_address(ip))
        with self._lock:
            uid = self._workloads.by_address.newest(key)
            return self._workloads.by_uid.get(uid) if uid else None

    def workloads(self) -> list[Workload]:
        """Every workload, by uid (for config_dump)."""
        with self._lock:
            return sorted(self._workloads.by_uid.values(), key=lambda w: w.uid)

    def workloads_on_node(self, node: str) -> list[Workload]:
        """The workloads placed on `node`: whose certificates this node's ztunnel prefetches."""
        with self._lock:
            return sorted(self._workloads.by_uids(self._workloads.by_node.names(node)), key=lambda w: w.uid)

    # --- services --------------------------------------------------------------------------------

    def service(self, key: str) -> Service | None:
        """The service named `ns/hostname`."""
        with self._lock:
            return self._services.by_key.get(key)

    def service_by_vip(self, ip: IpAddress | str, port: int, network: str = "") -> Service | None:
        """The service whose VIP is `ip`. Where several share the VIP (ServiceEntries may, on
        different ports), the newest one that has `port`, else the newest."""
        key = NetworkAddress(network, ipaddress.ip_address(ip))
        with self._lock:
            services = [self._services.by_key[k] for k in self._services.by_vip.names(key)]
        return next((s for s in services if port in s.ports), services[0] if services else None)

    def services_by_hostname(self, hostname: str) -> list[Service]:
        """The services named `hostname` (any case), in every namespace that has one."""
        with self._lock:
            return [self._services.by_key[k] for k in self._services.by_hostname.names(hostname.lower())]

    def services(self) -> list[Service]:
        with self._lock:
            return sorted(self._services.by_key.values(), key=lambda s: s.key)

    def endpoints(self, service: Service, port: int) -> list[Endpoint]:
        """(workload, target port) for each workload serving `port` of `service`: healthy ones,
        or all when the service's health policy is ALLOW_ALL. Ordered by uid."""
        with self._lock:
            candidates = self._workloads.by_uids(self._workloads.by_service.names(service.key))
        candidates.sort(key=lambda w: w.uid)
        return load_balancing.endpoints(service, candidates, port)

    def pick_endpoint(self, service: Service, port: int, source: Workload | None = None) -> Endpoint | None:
        """One endpoint for a new connection to `port` of `service`: random, weighted by capacity,
        among those the service's routing preference keeps for `source`. None when there is none."""
        options = load_balancing.prefer_local(service, self.endpoints(service, port), source)
        return load_balancing.choose(options, self._rng)

    # --- policies --------------------------------------------------------------------------------

    def policy(self, key: str) -> Policy | None:
        """The policy named `ns/name`."""
        with self._lock:
            return self._policies.by_key.get(key)

    def policies(self) -> list[Policy]:
        with self._lock:
            return sorted(self._policies.by_key.values(), key=lambda p: p.key)

    def namespace_policies(self, namespace: str) -> list[str]:
        """Keys of the policies that apply to every workload of `namespace` (scope NAMESPACE);
        `namespace_policies(GLOBAL_NAMESPACE)` gives the GLOBAL ones. Sorted."""
        with self._lock:
            return sorted(self._policies.by_namespace.names(namespace))


GLOBAL_NAMESPACE = GLOBAL_BUCKET
