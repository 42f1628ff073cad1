"""Objects for the diagnostic commands' unit tests: a ConfigStore as `load_store` would fill it."""

from __future__ import annotations

from typing import Any

from services.xds.model import (
    AUTHORIZATION_POLICIES,
    GATEWAYS,
    HTTP_ROUTES,
    NAMESPACES,
    PODS,
    SERVICES,
    WATCHED,
    ConfigStore,
)

Json = dict[str, Any]


def store_of(objects: dict[str, list[Json]]) -> ConfigStore:
    store = ConfigStore()
    for kind in WATCHED:
        store.replace_kind(kind, objects.get(kind, []), 1)
    return store


def namespace(name: str, **labels: str) -> Json:
    return {"metadata": {"name": name, "labels": labels}}


def pod(name: str, ip: str, sa: str = "default", ns: str = "default", captured: bool = True, **labels: str) -> Json:
    annotations = {"ambient.istio.io/redirection": "enabled"} if captured else {}
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations, "uid": f"uid-{name}"},
        "spec": {"nodeName": "node-1", "serviceAccountName": sa, "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def service(
    name: str, vip: str, selector: dict[str, str], ns: str = "default", port: int = 9080, **labels: str
) -> Json:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"clusterIP": vip, "selector": selector, "ports": [{"name": "http", "port": port, "targetPort": port}]},
    }


def waypoint(name: str = "waypoint", ns: str = "default", address: str | None = "198.18.200.1") -> Json:
    status: Json = {"conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed"}]}
    if address:
        status["addresses"] = [{"type": "IPAddress", "value": address}]
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
        "status": status,
    }


def policy(name: str, spec: Json, ns: str = "default", status: Json | None = None) -> Json:
    obj: Json = {"metadata": {"name": name, "namespace": ns}, "spec": spec}
    if status:
        obj["status"] = status
    return obj


def bookinfo(*policies: Json, with_waypoint: bool = True) -> ConfigStore:
    """default (ambient, use-waypoint on the reviews Service), a client pod, reviews pod and Service."""
    reviews_labels = {"istio.io/use-waypoint": "waypoint"} if with_waypoint else {}
    return store_of(
        {
            NAMESPACES: [namespace("default", **{"istio.io/dataplane-mode": "ambient"}), namespace("istio-system")],
            PODS: [
                pod("client", "198.18.1.10", sa="sleep", app="sleep"),
                pod("reviews-0", "198.18.1.20", sa="reviews", app="reviews"),
            ],
            SERVICES: [service("reviews", "198.18.100.5", {"app": "reviews"}, **reviews_labels)],
            GATEWAYS: [waypoint()] if with_waypoint else [],
            AUTHORIZATION_POLICIES: list(policies),
            HTTP_ROUTES: [],
        }
    )
