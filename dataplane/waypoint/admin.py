"""The waypoint's admin (15000), metrics (15020) and readiness (15021) endpoints.

- `:15000/config_dump`: filter chains by (VIP, port) or (port, SNI), route configs, clusters with
  their endpoints (load, ejection) and circuit-breaker counts, the certificate (serial, validity),
  the SDS Secrets by name (kind and serial, never their data), xDS status; `POST /quitquitquit`;
- `:15020/stats/prometheus`: the L7 metrics;
- `:15021/healthz/ready`: 200 once the certificate is at hand and the Listener and its routes
  arrived (contract), else 503 naming what is awaited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from mesh import admin_http
from mesh.admin_http import Routes
from mesh.admin_http import readiness_routes as readiness_routes  # served by app.py from here
from mesh.readiness import Readiness

from .config import ConfigStore
from .identity import WaypointIdentity
from .ingress.tls_config import CertificateSecret, Secret
from .l7.upstreams import ClusterState
from .proxy.clusters import UpstreamClusters
from .settings import WaypointConfig
from .telemetry import CONTENT_TYPE, Metrics
from .xds_client import XdsClient


@dataclass(frozen=True)
class AdminSources:
    """What the admin endpoints read, and the one thing they do: ask the process to quit."""

    config: WaypointConfig
    store: ConfigStore
    identity: WaypointIdentity
    xds: XdsClient
    readiness: Readiness
    metrics: Metrics
    clusters: UpstreamClusters
    quit: Callable[[], None]


def _certificate(src: AdminSources) -> dict[str, Any]:
    cert = src.identity.certificate()
    statuses = [s for s in src.identity.status() if s.identity == src.identity.identity]
    status = statuses[0] if statuses else None
    return {
        "identity": str(src.identity.identity),
        "state": status.state.value if status else "Initializing",
        "serial": cert.serial if cert else None,
        "notBefore": cert.not_before.isoformat() if cert else None,
        "notAfter": cert.not_after.isoformat() if cert else None,
        "nextRefresh": status.next_refresh.isoformat() if status and status.next_refresh else None,
        "error": status.error if status else None,
    }


def config_dump(src: AdminSources) -> dict[str, Any]:
    """The whole dump (see the module docstring)."""
    snap = src.store.snapshot
    listeners = {
        name: [
            {
                "name": c.name,
                "vips": sorted(c.vips),
                "port": c.port,
                "codec": c.codec,
                "routeConfig": c.route_config_name,
                "jwt": c.jwt is not None,
                "rbacFilters": len(c.rbac),
                "fault": c.fault,
                "serverNames": list(c.server_names),
                "tls": {
                    "certificates": list(c.tls.certificate_secrets),
                    "validation": c.tls.validation_secret,
                    "requireClientCertificate": c.tls.require_client_certificate,
                }
                if c.tls
                else None,
            }
            for c in chains
        ]
        for name, chains in snap.listeners.items()
    }
    states = src.clusters.states()
    clusters = {
        name: {"cluster": json_format.MessageToDict(cluster), **_cluster_state(states.get(name))}
        for name, cluster in snap.clusters.items()
    }
    return {
        "gateway": src.config.gateway,
        "listeners": listeners,
        "routes": {name: json_format.MessageToDict(r.proto) for name, r in snap.routes.items()},
        "clusters": clusters,
        "certificate": _certificate(src),
        "secrets": {name: _secret(secret) for name, secret in snap.secrets.items()},
        "xds": src.xds.status(),
    }


def _secret(secret: Secret) -> dict[str, Any]:
    """What an SDS Secret is, never its data."""
    if isinstance(secret, CertificateSecret):
        return {"kind": "tls_certificate", "serial": secret.serial}
    return {"kind": "validation_context"}


def _cluster_state(state: ClusterState | None) -> dict[str, Any]:
    """Endpoints with their load and ejection, and the circuit breakers' counts."""
    if state is None:
        return {"endpoints": [], "circuitBreakers": {}}
    endpoints = []
    for e in state.endpoints:
        stats = state.stats[e.key]
        endpoints.append(
            {
                "address": f"{e.address}:{e.port}",
                "tunnel": e.tunnel,
                "hboneAddress": f"{e.hbone_address[0]}:{e.hbone_address[1]}" if e.hbone_address else None,
                "identity": e.identity,
                "workload": e.workload,
                "weight": e.weight,
                "activeRequests": stats.active_requests,
                "ejected": stats.ejected,
                "timesEjected": stats.times_ejected,
            }
        )
    breakers = {
        r.value: {"limit": state.breakers.limits[r], "inUse": state.breakers.in_use[r], "overflows": n}
        for r, n in state.breakers.overflows.items()
    }
    return {"lbPolicy": state.lb_policy.name, "endpoints": endpoints, "circuitBreakers": breakers}


def admin_routes(src: AdminSources) -> Routes:
    """`/config_dump`, `POST /quitquitquit` (mesh/admin_http.py's routes)."""
    return admin_http.admin_routes("waypoint", lambda: config_dump(src), src.quit)


def metrics_routes(metrics: Metrics) -> Routes:
    """`/stats/prometheus` and `/metrics`."""
    return admin_http.metrics_routes(metrics, CONTENT_TYPE)
