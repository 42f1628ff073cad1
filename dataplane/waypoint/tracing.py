"""Request spans exported over OTLP/HTTP (docs/waypoint.md, "Telemetry").

Only built when `--otlp-endpoint` is set (app.py imports this module then, and only then), so a
waypoint without it pays nothing. With it, each request gets one SERVER span:
- its parent is the incoming W3C `traceparent` (trace context §3.2; a new trace when absent or
  malformed), and the `traceparent` sent upstream names this span, so the next hop's span is its
  child; the sampled flag is honoured (the SDK's default sampler is parent-based, always-on for a
  new trace);
- it ends when the response body has gone out, named `{method} {route name or host}`, with the
  attributes of `span_attributes`.

The SDK's BatchSpanProcessor queues ended spans and exports them from its own thread in batches,
so the event loop only records (its knobs are the standard `OTEL_BSP_*` variables, e.g.
`OTEL_BSP_SCHEDULE_DELAY`, milliseconds, default 5000).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from .proxy.messages import HttpRequest

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")
TRACES_PATH = "/v1/traces"  # OTLP/HTTP's path for traces


@dataclass(frozen=True)
class TraceParent:
    """A W3C traceparent's fields (ids as integers, as the SDK holds them)."""

    trace_id: int
    span_id: int
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The traceparent header, or None when absent or invalid (trace context §3.2.2: version ff,
    all-zero ids, and a version-00 header with extra fields are invalid; later versions may add
    fields after the fourth)."""
    text = (value or "").strip()
    match = _TRACEPARENT.match(text)
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or (version == "00" and len(text) != 55):
        return None
    parent = TraceParent(int(trace_id, 16), int(span_id, 16), int(flags, 16))
    return parent if parent.trace_id and parent.span_id else None


def format_traceparent(parent: TraceParent) -> str:
    """`00-{trace id}-{span id}-{flags}`."""
    return f"00-{parent.trace_id:032x}-{parent.span_id:016x}-{parent.flags:02x}"


def span_attributes(
    *,
    method: str,
    path: str,
    status: int,
    authority: str,
    upstream_cluster: str | None,
    response_flags: str,
    source_principal: str | None,
    request_id: str | None,
) -> dict[str, str | int]:
    """A request span's attributes: OpenTelemetry's HTTP semantic conventions (`http.request.method`,
    `url.path`, `http.response.status_code`, `server.address`), then Envoy's tracing tags
    (`upstream_cluster`, `response_flags`, `guid:x-request-id`) and `istio.source_principal`."""
    host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
    out: dict[str, str | int] = {
        "http.request.method": method,
        "url.path": path.split("?", 1)[0],
        "http.response.status_code": status,
        "server.address": host,
        "response_flags": response_flags or "-",
    }
    optional = {
        "upstream_cluster": upstream_cluster,
        "istio.source_principal": source_principal,
        "guid:x-request-id": request_id,
    }
    out |= {k: v for k, v in optional.items() if v}
    return out


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: as given, or with `/v1/traces` when it names no path."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return endpoint.rstrip("/") + TRACES_PATH if parts.path in ("", "/") else endpoint


class RequestSpan:
    """One request's span: started on arrival, finished when the response has gone out."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def finish(self, route: str | None, **fields: Any) -> None:
        """End the span, named `{method} {route or host}`, with `span_attributes(**fields)`."""
        span = self._span
        if span.is_recording():
            attributes = span_attributes(**fields)
            span.update_name(f"{fields['method']} {route or attributes['server.address']}")
            span.set_attributes(attributes)
            if fields["status"] >= 500:  # semantic conventions: a 5xx is an error for a server span
                span.set_status(Status(StatusCode.ERROR))
        span.end()


class Tracer:
    """Starts request spans; ended spans go to `processor` (a BatchSpanProcessor in production)."""

    def __init__(self, processor: SpanProcessor, resource: Mapping[str, str]) -> None:
        self._provider = TracerProvider(resource=Resource.create(dict(resource)))
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer("dataplane.waypoint")

    def start(self, request: HttpRequest) -> RequestSpan:
        """A SERVER span whose parent is the request's traceparent; the request's traceparent is
        rewritten to name the new span (what goes upstream)."""
        parent = parse_traceparent(request.header("traceparent"))
        context = None
        if parent is not None:
            remote = trace.SpanContext(
                parent.trace_id, parent.span_id, is_remote=True, trace_flags=trace.TraceFlags(parent.flags)
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        span = self._tracer.start_span("request", context=context, kind=SpanKind.SERVER)
        own = span.get_span_context()
        if own.is_valid:
            header = format_traceparent(TraceParent(own.trace_id, own.span_id, int(own.trace_flags)))
            request.headers = [(k, v) for k, v in request.headers if k != "traceparent"]
            request.headers.append(("traceparent", header))
        return RequestSpan(span)

    def shutdown(self) -> None:
        """Export what is queued, then stop (blocking: call it from a thread)."""
        self._provider.shutdown()


def otlp_tracer(endpoint: str, resource: Mapping[str, str]) -> Tracer:
    """A Tracer exporting to `endpoint` over OTLP/HTTP (JSON encoding, otlp_json.py), in batches."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .otlp_json import OtlpJsonExporter

    return Tracer(BatchSpanProcessor(OtlpJsonExporter(traces_url(endpoint))), resource)
