"""ztunnel's admin (15000), metrics (15020) and readiness (15021) endpoints (reference §7).

- `:15000/config_dump`: workloads, services, policies, certificates (serial, validity, state),
  open connections, the pods served, xDS status; `/quitquitquit` starts the drain and exit;
- `:15020/stats/prometheus` and `/metrics`: the L4 metrics;
- `:15021/healthz/ready`: 200 once xDS has answered both types and the ZDS snapshot is served,
  503 naming what is still awaited.
They listen on the node's underlay IP so `meshctl` in the root namespace reaches them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mesh import admin_http
from mesh.admin_http import readiness_routes as readiness_routes  # served by app.py from here
from mesh.certs.manager import CertificateManager

from .config_dump import CertificateView, certificate_json, policy_json, services_json, workload_json
from .http import Routes
from .identity import TlsContexts
from .inpod.manager import WorkloadManager
from .metrics import CONTENT_TYPE, Metrics
from .proxy.connection import Tracker
from .readiness import Readiness
from .settings import ZtunnelConfig
from .state import StateStore
from .xds_client import XdsClient


@dataclass(frozen=True)
class AdminSources:
    """What the admin endpoints read (and the one thing they do: ask the process to quit)."""

    config: ZtunnelConfig
    store: StateStore
    certs: CertificateManager
    contexts: TlsContexts
    tracker: Tracker
    pods: WorkloadManager
    xds: XdsClient
    readiness: Readiness
    metrics: Metrics
    quit: Callable[[], None]
    started: float


def config_dump(src: AdminSources) -> dict[str, Any]:
    """The whole dump (see the module docstring)."""
    workloads = src.store.workloads()
    certificates = [
        # A prefetched identity with no pod of its own here (e.g. a waypoint's) has no TLS
        # contexts: its certificate is shown from the manager.
        certificate_json(
            CertificateView(status, src.contexts.certificate(status.identity) or src.certs.held(status.identity))
        )
        for status in src.certs.certificates()
    ]
    pods = [
        {
            "uid": p.uid,
            "name": p.info.name,
            "namespace": p.info.namespace,
            "identity": str(p.identity),
            "workloadUid": (w.uid if (w := p.workload()) else None),
            "state": "Up",
        }
        for p in sorted(src.pods.pods.values(), key=lambda p: p.name)
    ]
    config = src.config
    return {
        "workloads": [workload_json(w) for w in workloads],
        "services": services_json(src.store.services(), workloads),
        "policies": [policy_json(p) for p in src.store.policies()],
        "certificates": certificates,
        "connections": src.tracker.listing(),
        "pods": pods,
        "xds": {"connected": src.xds.connected, "types": src.xds.status()},
        "config": {
            "node": config.node,
            "nodeIp": config.node_ip,
            "xdsAddress": config.xds_address,
            "caAddress": config.ca_address,
            "trustDomain": config.trust_domain,
            "clusterId": config.cluster_id,
            "certTtlSeconds": int(config.cert_ttl.total_seconds()),
            "uptimeSeconds": round(time.time() - src.started),
        },
    }


def admin_routes(src: AdminSources) -> Routes:
    """`/config_dump`, `POST /quitquitquit` (mesh/admin_http.py's routes)."""
    return admin_http.admin_routes("ztunnel", lambda: config_dump(src), src.quit)


def metrics_routes(metrics: Metrics) -> Routes:
    """`/stats/prometheus` and `/metrics`."""
    return admin_http.metrics_routes(metrics, CONTENT_TYPE)
