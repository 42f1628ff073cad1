"""L4 telemetry: Istio's four TCP metrics and one access-log line per connection (reference §7).

Label names are Istio's (istio/ztunnel: src/proxy/metrics.rs CommonTrafficLabels); a missing value
reads `unknown`. As ztunnel does, `*_app` and `*_version` carry the canonical service and
revision, `*_workload` the workload name (a Deployment's, say, not the pod's), `*_principal` the
full SPIFFE URI. `istio_tcp_received_bytes_total` counts what went from the source to the
destination, `istio_tcp_sent_bytes_total` what came back, whichever side reports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest

from .state import Service, Workload

UNKNOWN = "unknown"
LABELS = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

access_log = logging.getLogger("ztunnel.access")


def _or_unknown(value: str | None) -> str:
    return value or UNKNOWN


def _workload_labels(prefix: str, workload: Workload | None, principal: str | None) -> dict[str, str]:
    w = workload
    return {
        f"{prefix}_workload": _or_unknown(w and (w.workload_name or w.name)),
        f"{prefix}_canonical_service": _or_unknown(w and w.canonical_name),
        f"{prefix}_canonical_revision": _or_unknown(w and w.canonical_revision),
        f"{prefix}_workload_namespace": _or_unknown(w and w.namespace),
        f"{prefix}_principal": _or_unknown(principal),
        f"{prefix}_app": _or_unknown(w and w.canonical_name),
        f"{prefix}_version": _or_unknown(w and w.canonical_revision),
        f"{prefix}_cluster": _or_unknown(w and w.cluster_id),
    }


@dataclass(frozen=True, kw_only=True, slots=True)
class Peers:
    """Who a connection is between, as telemetry names them."""

    reporter: str  # "source" (outbound) or "destination" (inbound)
    source: Workload | None
    source_principal: str | None
    destination: Workload | None
    destination_principal: str | None
    service: Service | None
    mtls: bool


def traffic_labels(peers: Peers, response_flags: str = "-") -> dict[str, str]:
    """The label set of one connection, in Istio's names (see the module docstring)."""
    service = peers.service
    labels = {
        "reporter": peers.reporter,
        **_workload_labels("source", peers.source, peers.source_principal),
        "destination_service": _or_unknown(service and service.hostname),
        "destination_service_namespace": _or_unknown(service and service.namespace),
        "destination_service_name": _or_unknown(service and service.name),
        **_workload_labels("destination", peers.destination, peers.destination_principal),
        "request_protocol": "tcp",
        "response_flags": response_flags or "-",
        "connection_security_policy": "mutual_tls" if peers.mtls else UNKNOWN,
    }
    return {name: labels[name] for name in LABELS}


class Metrics:
    """The registry ztunnel serves on `/stats/prometheus` and `/metrics`."""

    def __init__(self) -> None:
        disable_created_metrics()  # ztunnel exports no *_created series
        self.registry = CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, LABELS, registry=self.registry)

        self.opened = counter("istio_tcp_connections_opened", "The total number of TCP connections opened")
        self.closed = counter("istio_tcp_connections_closed", "The total number of TCP connections closed")
        self.sent = counter("istio_tcp_sent_bytes", "The size of total bytes sent during response (TCP)")
        self.received = counter("istio_tcp_received_bytes", "The size of total bytes received during request (TCP)")
        self.failed = Counter(
            "tcp_connections_failed", "Connections that failed before data flowed", LABELS, registry=self.registry
        )

    def connection_opened(self, labels: Mapping[str, str]) -> None:
        self.opened.labels(**labels).inc()

    def connection_closed(self, labels: Mapping[str, str], received: int, sent: int) -> None:
        """Count the close and the bytes: `received` from the source, `sent` back to it."""
        self.closed.labels(**labels).inc()
        if received:
            self.received.labels(**labels).inc(received)
        if sent:
            self.sent.labels(**labels).inc(sent)

    def connection_failed(self, labels: Mapping[str, str]) -> None:
        self.failed.labels(**labels).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every series."""
        return generate_latest(self.registry)
