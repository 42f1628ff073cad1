"""Object factories and a store builder for the translation tests.

Objects are the JSON shapes istiod serves (the schemas of mesh/resources); only the fields a test
cares about are filled in, the rest keep sensible defaults.
"""

from __future__ import annotations

import itertools
from typing import Any

from mesh.resources.registry import default_registry
from services.xds.model import (
    AUTHORIZATION_POLICIES,
    GATEWAYS,
    NAMESPACES,
    NODES,
    PEER_AUTHENTICATIONS,
    PODS,
    SERVICE_ENTRIES,
    SERVICES,
    WORKLOAD_ENTRIES,
    Change,
    ConfigStore,
)

Json = dict[str, Any]

_KINDS = {
    "Namespace": NAMESPACES,
    "Node": NODES,
    "Pod": PODS,
    "Service": SERVICES,
    "ServiceEntry": SERVICE_ENTRIES,
    "WorkloadEntry": WORKLOAD_ENTRIES,
    "AuthorizationPolicy": AUTHORIZATION_POLICIES,
    "PeerAuthentication": PEER_AUTHENTICATIONS,
    "Gateway": GATEWAYS,
}


def kind_key(obj: Json) -> str:
    """The store's kind key for an object, from its apiVersion and kind."""
    kind = default_registry().by_gvk(obj["apiVersion"], obj["kind"])
    assert kind is not None, f"unknown kind {obj['apiVersion']} {obj['kind']}"
    return kind.key


class Cluster:
    """A ConfigStore plus a revision counter: apply and delete objects like the change stream."""

    def __init__(self, *objects: Json):
        self.store = ConfigStore()
        self._revisions = itertools.count(1)
        for obj in objects:
            self.apply(obj)

    def apply(self, obj: Json) -> Change | None:
        """Store a version of `obj` (create or update)."""
        return self.store.apply(kind_key(obj), obj, next(self._revisions))

    def delete(self, obj: Json) -> Change | None:
        """Delete the object named like `obj`."""
        return self.store.apply(kind_key(obj), obj, next(self._revisions), deleted=True)


def _meta(name: str, namespace: str | None, labels: Json | None, annotations: Json | None = None) -> Json:
    meta: Json = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def namespace(name: str, labels: Json | None = None) -> Json:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, None, labels)}


def node(name: str, labels: Json | None = None) -> Json:
    return {"apiVersion": "v1", "kind": "Node", "metadata": _meta(name, None, labels)}


def pod(
    name: str,
    ns: str = "default",
    ip: str | None = "198.18.1.10",
    labels: Json | None = None,
    annotations: Json | None = None,
    phase: str = "Running",
    ports: list[Json] | None = None,
    node_name: str = "node-1",
    service_account: str = "default",
    **status: Any,
) -> Json:
    container: Json = {"name": "app", "command": ["sleep", "inf"]}
    if ports:
        container["ports"] = ports
    pod_status: Json = {"phase": phase, **status}
    if ip:
        pod_status["podIP"] = ip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(name, ns, labels, annotations),
        "spec": {"containers": [container], "nodeName": node_name, "serviceAccountName": service_account},
        "status": pod_status,
    }


def service(
    name: str,
    ns: str = "default",
    selector: Json | None = None,
    ports: list[Json] | None = None,
    cluster_ip: str | None = "198.19.0.10",
    labels: Json | None = None,
    **spec: Any,
) -> Json:
    body: Json = {"ports": ports if ports is not None else [{"name": "http", "port": 80, "targetPort": 8080}]}
    if selector is not None:
        body["selector"] = selector
    if cluster_ip is not None:
        body["clusterIP"] = cluster_ip
        body["clusterIPs"] = [cluster_ip]
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, ns, labels), "spec": body}


def gateway(
    name: str,
    ns: str = "default",
    address: str | None = "198.19.0.100",
    labels: Json | None = None,
    class_name: str = "istio-waypoint",
    allowed_from: str | None = None,
) -> Json:
    listener: Json = {"name": "mesh", "port": 15008, "protocol": "HBONE"}
    if allowed_from:
        listener["allowedRoutes"] = {"namespaces": {"from": allowed_from}}
    obj: Json = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": _meta(name, ns, labels),
        "spec": {"gatewayClassName": class_name, "listeners": [listener]},
    }
    if address:
        obj["status"] = {"addresses": [{"type": "IPAddress", "value": address}]}
    return obj


def workload_entry(
    name: str, ns: str = "default", labels: Json | None = None, spec_labels: Json | None = None, **spec: Any
) -> Json:
    if spec_labels:
        spec["labels"] = dict(spec_labels)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": _meta(name, ns, labels),
        "spec": spec,
    }


def service_entry(name: str, ns: str = "default", labels: Json | None = None, **spec: Any) -> Json:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": _meta(name, ns, labels),
        "spec": spec,
    }


def authorization_policy(name: str, ns: str = "default", **spec: Any) -> Json:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": _meta(name, ns, None),
        "spec": spec,
    }


def peer_authentication(name: str, ns: str = "default", created: str | None = None, **spec: Any) -> Json:
    obj = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": _meta(name, ns, None),
        "spec": spec,
    }
    if created:
        obj["metadata"]["creationTimestamp"] = created
    return obj
