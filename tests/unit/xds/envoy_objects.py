"""Factories for the objects the Envoy translation reads besides Services and Pods (objects.py has
those): HTTPRoute, GRPCRoute, VirtualService, DestinationRule, as istiod serves them (camelCase)."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def _meta(name: str, ns: str, created: str | None) -> Json:
    meta: Json = {"name": name, "namespace": ns}
    if created:
        meta["creationTimestamp"] = created
    return meta


def service_parent(name: str, port: int | None = None, **extra: Any) -> Json:
    ref: Json = {"group": "", "kind": "Service", "name": name, **extra}
    if port is not None:
        ref["port"] = port
    return ref


def backend(name: str, port: int | None = 80, weight: int | None = None, **extra: Any) -> Json:
    ref: Json = {"name": name, **extra}
    if port is not None:
        ref["port"] = port
    if weight is not None:
        ref["weight"] = weight
    return ref


def http_route(
    name: str, parents: list[Json], rules: list[Json], ns: str = "default", created: str | None = None
) -> Json:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _meta(name, ns, created),
        "spec": {"parentRefs": parents, "rules": rules},
    }


def grpc_route(
    name: str, parents: list[Json], rules: list[Json], ns: str = "default", created: str | None = None
) -> Json:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": _meta(name, ns, created),
        "spec": {"parentRefs": parents, "rules": rules},
    }


def virtual_service(
    name: str, hosts: list[str], http: list[Json], ns: str = "default", created: str | None = None, **spec: Any
) -> Json:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": _meta(name, ns, created),
        "spec": {"hosts": hosts, "http": http, **spec},
    }


def destination_rule(name: str, host: str, ns: str = "default", created: str | None = None, **spec: Any) -> Json:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": _meta(name, ns, created),
        "spec": {"host": host, **spec},
    }
