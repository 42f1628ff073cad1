"""L4 telemetry: Istio's four TCP metrics and one access-log line per connection (reference §7).

Label names are Istio's (istio/ztunnel: src/proxy/metrics.rs CommonTrafficLabels); a missing value
reads `unknown`. As ztunnel does, `*_app` and `*_version` carry the canonical service and
revision, `*_workload` the workload name (a Deployment's, say, not the pod's), `*_principal` the
full SPIFFE URI. `istio_tcp_received_bytes_total` counts what went from the source to the
destination, `istio_tcp_sent_bytes_total` what came back, whichever side reports.

The counters and their text exposition (format 0.0.4) are written here rather than taken from
prometheus_client: its package import also loads http.server, urllib.request, wsgiref and email
(about 2.4 MB of ztunnel's resident memory, against a 60 MB goal), for five labelled counters.
The tests read the output with prometheus_client's own parser.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

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


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class LabelledCounter:
    """A counter family: one running total per label set (label values in LABELS order)."""

    __slots__ = ("doc", "name", "values")

    def __init__(self, name: str, doc: str) -> None:
        self.name = name  # exposed as {name}_total, as Prometheus names counters
        self.doc = doc
        self.values: dict[tuple[str, ...], int] = {}

    def inc(self, labels: Mapping[str, str], amount: int = 1) -> None:
        key = tuple(labels[name] for name in LABELS)
        self.values[key] = self.values.get(key, 0) + amount

    def lines(self) -> list[str]:
        total = f"{self.name}_total"
        doc = self.doc.replace("\\", "\\\\").replace("\n", "\\n")
        out = [f"# HELP {total} {doc}", f"# TYPE {total} counter"]
        for key, value in self.values.items():
            labels = ",".join(f'{name}="{_escape_label(v)}"' for name, v in zip(LABELS, key, strict=True))
            out.append(f"{total}{{{labels}}} {value}")
        return out


class Metrics:
    """The counters ztunnel serves on `/stats/prometheus` and `/metrics`."""

    def __init__(self) -> None:
        self.opened = LabelledCounter("istio_tcp_connections_opened", "The total number of TCP connections opened")
        self.closed = LabelledCounter("istio_tcp_connections_closed", "The total number of TCP connections closed")
        self.sent = LabelledCounter("istio_tcp_sent_bytes", "The size of total bytes sent during response (TCP)")
        self.received = LabelledCounter(
            "istio_tcp_received_bytes", "The size of total bytes received during request (TCP)"
        )
        self.failed = LabelledCounter("tcp_connections_failed", "Connections that failed before data flowed")
        self._families = (self.opened, self.closed, self.sent, self.received, self.failed)

    def connection_opened(self, labels: Mapping[str, str]) -> None:
        self.opened.inc(labels)

    def connection_closed(self, labels: Mapping[str, str], received: int, sent: int) -> None:
        """Count the close and the bytes: `received` from the source, `sent` back to it."""
        self.closed.inc(labels)
        if received:
            self.received.inc(labels, received)
        if sent:
            self.sent.inc(labels, sent)

    def connection_failed(self, labels: Mapping[str, str]) -> None:
        self.failed.inc(labels)

    def exposition(self) -> bytes:
        """The Prometheus text format (0.0.4) of every series."""
        lines = [line for family in self._families for line in family.lines()]
        return ("\n".join(lines) + "\n").encode()
