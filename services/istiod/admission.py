"""Rules that need the store's state, run inside the writer (so they are race-free).

Schema checks live with the kinds (mesh.resources); what depends on other objects lives here:
allocating Service addresses, immutable fields, the namespace an object is created in, the
objects a namespace brings with it, and what deleting a namespace takes with it.
"""

from __future__ import annotations

import ipaddress
import random
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from mesh.resources.base import forbidden, invalid
from mesh.resources.core import NAMESPACE, NODE, POD, SERVICE, SERVICE_ACCOUNT
from mesh.resources.kind import ResourceKind
from mesh.resources.registry import Registry

from . import errors
from .store.state import Stored, Txn

Json = dict[str, Any]

# Namespaces the API keeps, as the apiserver keeps "default" and "kube-system".
PROTECTED_NAMESPACES = ("default", "istio-system")
NODE_PORTS = range(30000, 32768)
NODE_RANGE = "30000-32767"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_name(prefix: str) -> str:
    # The apiserver appends five characters from an alphabet without vowels or look-alikes.
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(5))


def new_uid() -> str:
    return str(uuid.uuid4())


class Admission:
    """Stateful admission for the kinds that need it. `txn` is the writer's transaction."""

    def __init__(self, registry: Registry, service_cidr: str):
        self.registry = registry
        self.service_net = ipaddress.ip_network(service_cidr)

    # --- create ---------------------------------------------------------------------------------

    def before_create(self, txn: Txn, kind: ResourceKind, obj: Json) -> None:
        """Check that the object may exist and fill what depends on other objects."""
        ns = obj["metadata"].get("namespace", "")
        if kind.namespaced and txn.get(NAMESPACE.key, "", ns) is None:
            raise errors.not_found(NAMESPACE, ns)
        if kind is SERVICE:
            self._allocate_service(txn, obj, None)
        elif kind is POD and not (obj.get("spec") or {}).get("nodeName"):
            self._schedule(txn, obj)

    def _schedule(self, txn: Txn, pod: Json) -> None:
        """Bind a pod created without `spec.nodeName` to the schedulable Node running the fewest
        pods (ties by name). A minimal scheduler: no resources, affinity or taints; with no Node
        the pod stays Pending, as in Kubernetes."""
        selector = (pod.get("spec") or {}).get("nodeSelector") or {}
        candidates = [
            n
            for n in txn.list(NODE.key)
            if not (n.data.get("spec") or {}).get("unschedulable")
            and all((n.data["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        ]
        if not candidates:
            return
        load = {n.name: 0 for n in candidates}
        for other in txn.list(POD.key):
            node = (other.data.get("spec") or {}).get("nodeName")
            if node in load and (other.data.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                load[node] += 1
        pod["spec"]["nodeName"] = min(load, key=lambda name: (load[name], name))

    def after_create(self, txn: Txn, kind: ResourceKind, obj: Json) -> None:
        """Objects that come with a new one: every namespace gets a `default` ServiceAccount."""
        if kind is NAMESPACE:
            name = obj["metadata"]["name"]
            if txn.get(SERVICE_ACCOUNT.key, name, "default") is None:
                sa = {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {
                        "name": "default",
                        "namespace": name,
                        "uid": new_uid(),
                        "creationTimestamp": now_rfc3339(),
                    },
                }
                txn.write(SERVICE_ACCOUNT.key, name, "default", sa)

    # --- update ---------------------------------------------------------------------------------

    def prepare_update(self, kind: ResourceKind, obj: Json, old: Stored) -> None:
        """Before validation: drop what the old type allocated and the new one cannot have, as
        the apiserver's dropTypeDependentFields does (node ports of a former NodePort Service)."""
        spec = obj.get("spec")
        if kind is not SERVICE or not isinstance(spec, dict) or spec.get("type") in ("NodePort", "LoadBalancer"):
            return
        old_spec = old.data.get("spec") or {}
        for port in spec.get("ports") or []:
            if (
                isinstance(port, dict)
                and port.get("nodePort")
                and port.get("nodePort") == _old_node_port(old_spec, port)
            ):
                port.pop("nodePort")

    def before_update(self, txn: Txn, kind: ResourceKind, obj: Json, old: Stored) -> None:
        """Immutable fields, and allocations kept across updates."""
        if kind is SERVICE:
            self._allocate_service(txn, obj, old.data)
        elif kind is POD:
            _check_pod_update(obj, old.data)

    # --- delete ---------------------------------------------------------------------------------

    def before_delete(self, txn: Txn, kind: ResourceKind, obj: Stored) -> None:
        """Deleting a namespace deletes everything in it first (one revision per object)."""
        if kind is not NAMESPACE:
            return
        if obj.name in PROTECTED_NAMESPACES:
            raise errors.forbidden_reason(kind, obj.name, "this namespace may not be deleted")
        for other in self.registry.kinds:
            if other.namespaced:
                for child in txn.list(other.key, obj.name):
                    txn.delete(other.key, obj.name, child.name)

    # --- Services -------------------------------------------------------------------------------

    def _allocate_service(self, txn: Txn, obj: Json, old: Json | None) -> None:
        spec = obj["spec"]
        old_spec = (old or {}).get("spec") or {}
        name = obj["metadata"]["name"]
        kind_type = spec.get("type", "ClusterIP")
        old_ip = old_spec.get("clusterIP")
        wanted = spec.get("clusterIP")
        if kind_type == "ExternalName":
            # A DNS alias has no address; one allocated before a type change is released, as the
            # apiserver's dropTypeDependentFields does.
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        elif old is not None and old_ip:
            # clusterIP is immutable; an update that leaves it out keeps the allocated one.
            if wanted in (None, "") or wanted == old_ip:
                spec["clusterIP"] = old_ip
                spec["clusterIPs"] = [old_ip] if old_ip != "None" else ["None"]
            else:
                raise errors.invalid(SERVICE, name, [invalid("spec.clusterIP", wanted, "field is immutable")])
        elif wanted == "None":
            spec["clusterIPs"] = ["None"]
        else:
            used = self._used_ips(txn, obj)
            if wanted:
                ip = ipaddress.ip_address(wanted)
                if ip not in self.service_net:
                    why = f"provided IP is not in the valid range. The range of valid IPs is {self.service_net}"
                    raise errors.invalid(SERVICE, name, [invalid("spec.clusterIP", wanted, why)])
                if wanted in used:
                    why = "provided IP is already allocated"
                    raise errors.invalid(SERVICE, name, [invalid("spec.clusterIP", wanted, why)])
            else:
                wanted = self._free_ip(used)
            spec["clusterIP"] = wanted
            spec["clusterIPs"] = [wanted]
        if kind_type in ("NodePort", "LoadBalancer"):
            self._allocate_node_ports(txn, obj, old_spec)

    def _used_ips(self, txn: Txn, obj: Json) -> set[str]:
        me = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        used = set()
        for svc in txn.list(SERVICE.key):
            if (svc.namespace, svc.name) != me:
                ip = (svc.data.get("spec") or {}).get("clusterIP")
                if ip:
                    used.add(ip)
        return used

    def _free_ip(self, used: set[str]) -> str:
        net = self.service_net
        # Skip the network address and the first host (kept for an API service, as Kubernetes
        # does); probe random addresses, then fall back to a scan when the range is crowded.
        first, last = int(net.network_address) + 2, int(net.broadcast_address) - 1
        for _ in range(64):
            candidate = str(ipaddress.ip_address(random.randint(first, last)))
            if candidate not in used:
                return candidate
        for value in range(first, last + 1):
            candidate = str(ipaddress.ip_address(value))
            if candidate not in used:
                return candidate
        raise errors.ApiError(500, "InternalError", f"no free address left in the service range {net}")

    def _allocate_node_ports(self, txn: Txn, obj: Json, old_spec: Json) -> None:
        used = set()
        for svc in txn.list(SERVICE.key):
            if (svc.namespace, svc.name) != (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]):
                used |= {p.get("nodePort") for p in (svc.data.get("spec") or {}).get("ports") or []}
        old_ports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports") or []}
        for i, port in enumerate(obj["spec"].get("ports") or []):
            wanted = port.get("nodePort") or old_ports.get(port.get("port"))
            if wanted and wanted not in NODE_PORTS:
                why = f"provided port is not in the valid range. The range of valid ports is {NODE_RANGE}"
                raise errors.invalid(
                    SERVICE, obj["metadata"]["name"], [invalid(f"spec.ports[{i}].nodePort", wanted, why)]
                )
            if wanted and wanted in used:
                cause = invalid(f"spec.ports[{i}].nodePort", wanted, "provided port is already allocated")
                raise errors.invalid(SERVICE, obj["metadata"]["name"], [cause])
            if not wanted:
                free = [p for p in NODE_PORTS if p not in used]
                if not free:
                    raise errors.ApiError(500, "InternalError", "no free node port left")
                wanted = random.choice(free)
            port["nodePort"] = wanted
            used.add(wanted)


def _old_node_port(old_spec: Json, port: Json) -> int | None:
    for old_port in old_spec.get("ports") or []:
        if old_port.get("port") == port.get("port"):
            return old_port.get("nodePort")
    return None


def _check_pod_update(obj: Json, old: Json) -> None:
    """Pod specs are immutable except container images and a first `nodeName` (binding)."""
    new_spec, old_spec = obj["spec"], old["spec"]

    def comparable(spec: Json) -> Json:
        out = {k: v for k, v in spec.items() if k != "nodeName"}
        out["containers"] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get("containers") or []]
        return out

    name = obj["metadata"]["name"]
    if comparable(new_spec) != comparable(old_spec):
        why = "pod updates may not change fields other than `spec.containers[*].image` or a first `spec.nodeName`"
        raise errors.invalid(POD, name, [forbidden("spec", why)])
    old_node = old_spec.get("nodeName")
    if old_node and new_spec.get("nodeName") != old_node:
        raise errors.invalid(
            POD, name, [invalid("spec.nodeName", new_spec.get("nodeName"), "field is immutable once set")]
        )
