"""Targets: the hosts a gRPC client can dial, with their ports and ready endpoints.

A Kubernetes Service is one target (`{name}.{ns}.svc.cluster.local`); a ServiceEntry with
`resolution: STATIC` (or DNS with IP endpoints) gives one target per non-wildcard host. Endpoints
follow Kubernetes' EndpointSlice controller as Istio reads it (istio/istio:
pilot/pkg/serviceregistry/kube/controller/endpointslice.go): pods of the Service's namespace that
its selector matches, Running, not terminating, not reporting Ready=False (unless the Service
publishes not-ready addresses), with a pod IP; the port is the Service port's `targetPort`
(a number, or a container port name resolved per pod; absent means the port number).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from mesh.identity import DEFAULT_TRUST_DOMAIN
from services.xds.generators.view import ConfigView, IndexedView, labels_of, meta, selector_of
from services.xds.generators.workloads import REDIRECTION
from services.xds.model import PODS, SERVICE_ENTRIES, SERVICES

from .resources import service_host, service_of_host

Json = dict[str, Any]


@dataclass(frozen=True)
class TargetPort:
    """One port of a target: the number clients dial, its name, and the endpoint port spec."""

    number: int
    name: str = ""
    target: int | str | None = None  # a number, a container port name, or None (= number)
    app_protocol: str = ""  # Kubernetes appProtocol (a waypoint picks its HTTP codec by it)


@dataclass(frozen=True)
class Endpoint:
    """One ready address of a target port, with the labels subsets select by."""

    ip: str
    port: int
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # How a waypoint reaches it (docs/waypoint.md): "hbone" when ztunnel captured the pod, else
    # "plaintext"; and the SPIFFE identity it must present.
    tunnel: str = field(default="plaintext", compare=False, hash=False)
    identity: str = field(default="", compare=False, hash=False)
    # The pod behind it (empty for a ServiceEntry address): the waypoint's destination_workload.
    workload: str = field(default="", compare=False, hash=False)
    namespace: str = field(default="", compare=False, hash=False)


@dataclass(frozen=True)
class Target:
    """A host with its ports and, per port number, its ready endpoints (sorted)."""

    host: str
    namespace: str
    ports: tuple[TargetPort, ...]
    endpoints: dict[int, tuple[Endpoint, ...]]
    vips: tuple[str, ...] = ()  # the addresses clients dial (an IP, or a CIDR for a ServiceEntry)

    @property
    def default_port(self) -> TargetPort:
        """The port `xds:///{host}` (no port) resolves to: the first named `grpc*`, else the first."""
        return next((p for p in self.ports if p.name.startswith("grpc")), self.ports[0])


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def pod_ip(pod: Json, publish_not_ready: bool = False) -> str | None:
    """The pod's IP when it may serve: Running, not being deleted, Ready not False (any readiness
    when `publish_not_ready`), with an IP in `status.podIP`."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or meta(pod).get("deletionTimestamp"):
        return None
    not_ready = any(c.get("type") == "Ready" and c.get("status") == "False" for c in status.get("conditions") or [])
    if not_ready and not publish_not_ready:
        return None
    ip = status.get("podIP") or ""
    return ip if _is_ip(ip) else None


def container_port(pod: Json, name: str) -> int | None:
    """The number of the container port called `name`, or None."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name and isinstance(port.get("containerPort"), int):
                return port["containerPort"]
    return None


def _pod_port(pod: Json, port: TargetPort) -> int | None:
    if isinstance(port.target, str):
        return container_port(pod, port.target)  # a named targetPort: the pod must declare it
    return port.target or port.number


def _selected_pods(view: IndexedView, namespace: str, selector: dict[str, str]) -> list[Json]:
    names = view.matching(PODS, namespace, selector)
    return [pod for ns, name in sorted(names) if (pod := view.get(PODS, ns, name)) is not None]


def pod_identity(pod: Json) -> str:
    """The SPIFFE identity a pod's ztunnel presents for it (its service account, else `default`)."""
    sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    return f"spiffe://{DEFAULT_TRUST_DOMAIN}/ns/{meta(pod).get('namespace', '')}/sa/{sa}"


def pod_tunnel(pod: Json) -> str:
    """The tunnel ("hbone") when the node agent captured the pod (its redirection annotation), else "plaintext"."""
    annotations = meta(pod).get("annotations") or {}
    return "hbone" if annotations.get(REDIRECTION) == "enabled" else "plaintext"


def _pod_endpoints(pods: list[Json], ports: tuple[TargetPort, ...], not_ready: bool) -> dict[int, list[Endpoint]]:
    out: dict[int, list[Endpoint]] = {p.number: [] for p in ports}
    for pod in pods:
        ip = pod_ip(pod, not_ready)
        if ip is None:
            continue
        tunnel, identity = pod_tunnel(pod), pod_identity(pod)
        namespace = meta(pod).get("namespace", "")
        for port in ports:
            number = _pod_port(pod, port)
            if number:
                out[port.number].append(
                    Endpoint(ip, number, labels_of(pod), tunnel, identity, meta(pod).get("name", ""), namespace)
                )
    return out


def _frozen(endpoints: dict[int, list[Endpoint]]) -> dict[int, tuple[Endpoint, ...]]:
    # Sorted, so that the same endpoints always serialize to the same bytes.
    return {port: tuple(sorted(set(eps), key=lambda e: (e.ip, e.port))) for port, eps in endpoints.items()}


def service_ports(svc: Json) -> tuple[TargetPort, ...]:
    """The ports of a Service gRPC can use: its TCP ports; none for ExternalName (no endpoints)."""
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return ()
    return tuple(
        TargetPort(p["port"], p.get("name") or "", p.get("targetPort"), p.get("appProtocol") or "")
        for p in spec.get("ports") or []
        if (p.get("protocol") or "TCP") == "TCP"
    )


def entry_ports(se: Json) -> tuple[TargetPort, ...]:
    """The ports of a ServiceEntry that resolves to endpoints; none for NONE (passthrough)."""
    spec = se.get("spec") or {}
    if (spec.get("resolution") or "NONE") == "NONE":
        return ()
    return tuple(
        TargetPort(p["number"], p.get("name") or "", p.get("targetPort"), (p.get("protocol") or "").lower())
        for p in spec.get("ports") or []
    )


def entry_hosts(se: Json) -> list[str]:
    """A ServiceEntry's hosts a client can dial (wildcards name no single host)."""
    return list(dict.fromkeys(h for h in (se.get("spec") or {}).get("hosts") or [] if h and not h.startswith("*")))


def service_target(view: IndexedView, svc: Json) -> Target | None:
    """The target of a Kubernetes Service; None when it has no port gRPC can use."""
    spec = svc.get("spec") or {}
    ports = service_ports(svc)
    if not ports:
        return None
    name, namespace = meta(svc)["name"], meta(svc).get("namespace", "")
    selector = selector_of(SERVICES, svc)
    pods = _selected_pods(view, namespace, selector) if selector else []
    endpoints = _pod_endpoints(pods, ports, bool(spec.get("publishNotReadyAddresses")))
    addresses = [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]
    vips = tuple(dict.fromkeys(ip for ip in addresses if ip and _is_ip(ip)))  # "None" (headless) is no VIP
    return Target(service_host(name, namespace), namespace, ports, _frozen(endpoints), vips)


def _entry_endpoints(spec: Json, ports: tuple[TargetPort, ...], namespace: str) -> dict[int, list[Endpoint]]:
    """A ServiceEntry's inline endpoints: IP addresses only; an endpoint's own `ports` map (by port
    name) overrides the port's targetPort."""
    out: dict[int, list[Endpoint]] = {p.number: [] for p in ports}
    for entry in spec.get("endpoints") or []:
        address = entry.get("address") or ""
        if not _is_ip(address):
            continue  # a DNS name or a Unix socket: nothing a gRPC EDS endpoint can hold
        identity = ""
        if entry.get("serviceAccount"):
            identity = f"spiffe://{DEFAULT_TRUST_DOMAIN}/ns/{namespace}/sa/{entry['serviceAccount']}"
        for port in ports:
            number = (entry.get("ports") or {}).get(port.name) or port.target or port.number
            out[port.number].append(
                Endpoint(address, int(number), dict(entry.get("labels") or {}), "plaintext", identity)
            )
    return out


def service_entry_targets(view: IndexedView, se: Json) -> list[Target]:
    """One target per host of a ServiceEntry that resolves to endpoints (STATIC, or DNS whose
    endpoints are IPs); NONE (passthrough) and wildcard hosts have nothing to balance over."""
    spec = se.get("spec") or {}
    ports = entry_ports(se)
    if not ports:
        return []
    namespace = meta(se).get("namespace", "")
    endpoints = _entry_endpoints(spec, ports, namespace)
    selector = selector_of(SERVICE_ENTRIES, se)
    if selector:  # workloadSelector: pods of the namespace, at targetPort (or the port number)
        for port, found in _pod_endpoints(_selected_pods(view, namespace, selector), ports, False).items():
            endpoints[port] += found
    frozen = _frozen(endpoints)
    vips = tuple(a for a in spec.get("addresses") or [] if _is_ip(a.split("/", 1)[0]))
    return [Target(host, namespace, ports, frozen, vips) for host in entry_hosts(se)]


def host_owner(view: ConfigView, host: str, entries: list[Json]) -> tuple[str, tuple[TargetPort, ...]] | None:
    """(namespace, ports) of what serves `host`: its Kubernetes Service if one exists, else the
    oldest of the given ServiceEntries naming it (the translator's winner for the host's names),
    or None. The ports are exactly those the host has clusters for, so a route built from them
    never names a cluster CDS lacks (gRPC would wait for it until the call's deadline)."""
    ref = service_of_host(host)
    svc = view.get(SERVICES, ref[0], ref[1]) if ref else None
    if svc is not None:
        return ref[0], service_ports(svc)
    for se in entries:
        if host in entry_hosts(se):
            return meta(se).get("namespace", ""), entry_ports(se)
    return None
