"""L7 telemetry: Istio's request metrics and one JSON access-log line per request.

`istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`,
`istio_response_bytes` with Istio's label names, reporter="waypoint" (an ingress gateway reports
`reporter="source"` with itself as the source, as Istio's gateways do: `Reporting`). The source's facts come
from the `baggage` ztunnel puts on the CONNECT (dataplane/ztunnel/proxy/headers.py:
`k8s.cluster.name`, `k8s.namespace.name`, `k8s.<kind>.name`, `service.name`, `service.version`)
and the peer's verified principal; the destination's from the endpoint that answered (its
`istio` metadata: identity, pod, namespace) and the filter chain's service; a missing value
reads `unknown`.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest

from .access_log import AccessLog

UNKNOWN = "unknown"
LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Istio's buckets (ms) for durations, and bytes for sizes (istio/proxy stats plugin).
DURATION_BUCKETS = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
SIZE_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)

ACCESS_LOG = AccessLog()
atexit.register(ACCESS_LOG.flush)  # lines still queued when the process ends


def parse_baggage(value: str | None) -> dict[str, str]:
    """W3C baggage `k=v,k=v;props` into a dict (values percent-decoded)."""
    out: dict[str, str] = {}
    for member in (value or "").split(","):
        key, sep, rest = member.partition("=")
        if sep and key.strip():
            out[key.strip()] = unquote(rest.split(";", 1)[0].strip())
    return out


@dataclass(frozen=True)
class Source:
    """Who sent the requests of one CONNECT."""

    principal: str | None
    workload: str | None
    namespace: str | None
    app: str | None
    version: str | None
    cluster: str | None


def source_from(principal: str | None, baggage: dict[str, str]) -> Source:
    """The source's facts from its principal and its ztunnel's baggage."""
    workload = next(
        (
            v
            for k, v in baggage.items()
            if k.startswith("k8s.") and k.endswith(".name") and k not in ("k8s.cluster.name", "k8s.namespace.name")
        ),
        None,
    )
    namespace = baggage.get("k8s.namespace.name")
    if namespace is None and principal and "/ns/" in principal:
        namespace = principal.split("/ns/", 1)[1].split("/", 1)[0]
    return Source(
        principal,
        workload,
        namespace,
        baggage.get("service.name"),
        baggage.get("service.version"),
        baggage.get("k8s.cluster.name"),
    )


@dataclass(frozen=True)
class Reporting:
    """Who reports the requests: a waypoint (`reporter="waypoint"`, the source being the
    downstream peer) or an ingress gateway (`reporter="source"`, the source being the gateway
    itself; the upstream hop is HBONE, so `connection_security_policy` is `mutual_tls`)."""

    reporter: str = "waypoint"
    source: Source | None = None  # set: every request's source in telemetry

    def source_of(self, downstream: Source) -> Source:
        return self.source or downstream


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One finished request, as telemetry sees it."""

    source: Source
    reporter: str = "waypoint"
    service_host: str
    destination_principal: str | None
    destination_workload: str | None  # the endpoint's pod (`istio` metadata), when it says
    destination_namespace: str | None
    destination_cluster: str
    protocol: str  # http | grpc
    status: int
    grpc_status: str | None
    flags: str
    duration_ms: float
    request_bytes: int
    response_bytes: int


def _or_unknown(value: str | None) -> str:
    return value or UNKNOWN


def labels(record: RequestRecord) -> dict[str, str]:
    """The label set of one request, in Istio's names."""
    host = record.service_host
    parts = host.split(".")
    src = record.source
    service_ns = parts[1] if len(parts) > 1 else None
    dest_ns = record.destination_namespace or service_ns
    values = {
        "reporter": record.reporter,
        "source_workload": _or_unknown(src.workload),
        "source_workload_namespace": _or_unknown(src.namespace),
        "source_principal": _or_unknown(src.principal),
        "source_app": _or_unknown(src.app or src.workload),
        "source_version": _or_unknown(src.version),
        "source_cluster": _or_unknown(src.cluster),
        "destination_workload": _or_unknown(record.destination_workload),
        "destination_workload_namespace": _or_unknown(dest_ns),
        "destination_principal": _or_unknown(record.destination_principal),
        "destination_app": _or_unknown(parts[0] if host else None),
        "destination_version": UNKNOWN,
        "destination_service": _or_unknown(host),
        "destination_service_name": _or_unknown(parts[0] if host else None),
        "destination_service_namespace": _or_unknown(service_ns),
        "destination_cluster": _or_unknown(record.destination_cluster),
        "request_protocol": record.protocol,
        "response_code": str(record.status),
        "grpc_response_status": record.grpc_status or "",
        "response_flags": record.flags or "-",
        "connection_security_policy": "mutual_tls",
    }
    return values


class Metrics:
    """The registry served on `/stats/prometheus`."""

    def __init__(self) -> None:
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("istio_requests_total", "Requests handled", LABELS, registry=self.registry)
        self.duration = Histogram(
            "istio_request_duration_milliseconds",
            "Request duration",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.request_bytes = Histogram(
            "istio_request_bytes", "Request sizes", LABELS, buckets=SIZE_BUCKETS, registry=self.registry
        )
        self.response_bytes = Histogram(
            "istio_response_bytes", "Response sizes", LABELS, buckets=SIZE_BUCKETS, registry=self.registry
        )
        self._children: dict[tuple, tuple[Counter, Histogram, Histogram, Histogram]] = {}

    def record(self, record: RequestRecord) -> None:
        # `Metric.labels(**values)` validates, stringifies and looks up the label set under a lock,
        # four times per request: the children of a label set are kept here instead, keyed by the
        # record's fields the labels derive from. Children are never removed from the metrics, so
        # this holds no more label sets than the registry does.
        key = (
            record.source,
            record.reporter,
            record.service_host,
            record.destination_principal,
            record.destination_workload,
            record.destination_namespace,
            record.destination_cluster,
            record.protocol,
            record.status,
            record.grpc_status,
            record.flags,
        )
        children = self._children.get(key)
        if children is None:
            values = labels(record)
            children = self._children[key] = (
                self.requests.labels(**values),
                self.duration.labels(**values),
                self.request_bytes.labels(**values),
                self.response_bytes.labels(**values),
            )
        requests, duration, request_bytes, response_bytes = children
        requests.inc()
        duration.observe(record.duration_ms)
        request_bytes.observe(record.request_bytes)
        response_bytes.observe(record.response_bytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def access_log_enabled() -> bool:
    """Whether `log_request` writes anything (so a caller can skip building the fields)."""
    return ACCESS_LOG.enabled


def log_request(fields: dict[str, object], omit: Iterable[str] = ()) -> None:
    """One JSON line on `waypoint.access` (no header values: they may carry tokens)."""
    ACCESS_LOG.write({k: v for k, v in fields.items() if k not in omit} if omit else fields)
