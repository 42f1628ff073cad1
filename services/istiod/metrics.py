"""istiod's Prometheus metrics, on a registry of its own (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Requests by verb, kind and code with latency; the store revision; the outbox lag."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "apiserver_request_total",
            "API requests by verb, resource and HTTP code.",
            ["verb", "resource", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "apiserver_request_duration_seconds",
            "API request latency by verb and resource (watches excluded: they are long-lived).",
            ["verb", "resource"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.revision = Gauge("istiod_store_revision", "The newest committed revision.", registry=self.registry)
        self.published = Gauge(
            "istiod_outbox_published_revision",
            "The newest revision in the Redis change stream.",
            registry=self.registry,
        )
        self.outbox_lag = Gauge(
            "istiod_outbox_lag_revisions",
            "Committed revisions not yet in the Redis change stream.",
            registry=self.registry,
        )
        self.objects = Gauge(
            "istiod_store_objects", "Objects stored, by resource.", ["resource"], registry=self.registry
        )
        self.watchers = Gauge("istiod_watchers", "Open watch streams.", registry=self.registry)

    def observe_request(self, verb: str, resource: str, code: int, seconds: float) -> None:
        self.requests.labels(verb, resource, str(code)).inc()
        if verb != "watch":
            self.latency.labels(verb, resource).observe(seconds)
