"""mesh-ca's metrics: requests by result, and latency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class CaMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ca_requests_total",
            "CreateCertificate calls by result (issued, invalid, unauthenticated, denied, error).",
            ["result"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ca_request_duration_seconds",
            "CreateCertificate latency.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        for result in ("issued", "invalid", "unauthenticated", "denied", "error"):
            self.requests.labels(result)

    def observe(self, result: str, seconds: float) -> None:
        self.requests.labels(result).inc()
        self.latency.observe(seconds)
