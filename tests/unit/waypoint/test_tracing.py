"""Request spans (dataplane/waypoint/tracing.py) with the real OpenTelemetry SDK and its in-memory
exporter: W3C traceparent parsing, the parent taken from the request, the traceparent sent on
naming the new span, the span's name and attributes, and the sampled flag honoured."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from dataplane.waypoint.proxy.messages import HttpRequest
from dataplane.waypoint.tracing import TraceParent, Tracer, format_traceparent, parse_traceparent, traces_url

pytestmark = pytest.mark.unit

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
INCOMING = f"00-{TRACE}-{PARENT}-01"


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (INCOMING, TraceParent(int(TRACE, 16), int(PARENT, 16), 1)),
        (f"01-{TRACE}-{PARENT}-00-future", TraceParent(int(TRACE, 16), int(PARENT, 16), 0)),
        (f"00-{TRACE}-{PARENT}-01-extra", None),  # version 00 has exactly four fields
        (f"ff-{TRACE}-{PARENT}-01", None),
        (f"00-{'0' * 32}-{PARENT}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (INCOMING.upper(), None),
        ("", None),
        (None, None),
    ],
)
def test_parse_traceparent(header: str | None, parsed: TraceParent | None) -> None:
    assert parse_traceparent(header) == parsed
    if parsed is not None and header.startswith("00"):
        assert format_traceparent(parsed) == header


def test_traces_url() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://c/custom/path") == "https://c/custom/path"
    with pytest.raises(ValueError):
        traces_url("collector:4318")


def tracer() -> tuple[Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracer(SimpleSpanProcessor(exporter), {"service.name": "waypoint.default"}), exporter


def request(*headers: tuple[str, str]) -> HttpRequest:
    return HttpRequest("GET", "/api/items?x=1", "reviews.default.svc.cluster.local:9080", list(headers))


def finish(span, status: int = 200, route: str | None = "api") -> None:
    span.finish(
        route,
        method="GET",
        path="/api/items?x=1",
        status=status,
        authority="reviews.default.svc.cluster.local:9080",
        upstream_cluster="inbound-vip|9080||reviews.default.svc.cluster.local",
        response_flags="-",
        source_principal="spiffe://cluster.local/ns/default/sa/sleep",
        request_id="r-1",
    )


def test_the_span_is_a_child_of_the_incoming_traceparent_and_the_parent_of_the_next_hop() -> None:
    traces, exporter = tracer()
    incoming = request(("traceparent", INCOMING), ("tracestate", "vendor=1"))
    span = traces.start(incoming)
    assert exporter.get_finished_spans() == ()  # exported only when it ends
    finish(span)
    (exported,) = exporter.get_finished_spans()
    context = exported.get_span_context()
    assert f"{context.trace_id:032x}" == TRACE and exported.parent.span_id == int(PARENT, 16)
    assert exported.parent.is_remote and exported.kind is SpanKind.SERVER
    assert incoming.header("traceparent") == f"00-{TRACE}-{context.span_id:016x}-01"  # names this span
    assert incoming.header("tracestate") == "vendor=1"
    assert exported.name == "GET api"
    assert dict(exported.attributes) == {
        "http.request.method": "GET",
        "url.path": "/api/items",
        "http.response.status_code": 200,
        "server.address": "reviews.default.svc.cluster.local",
        "response_flags": "-",
        "upstream_cluster": "inbound-vip|9080||reviews.default.svc.cluster.local",
        "istio.source_principal": "spiffe://cluster.local/ns/default/sa/sleep",
        "guid:x-request-id": "r-1",
    }
    assert exported.resource.attributes["service.name"] == "waypoint.default"
    assert exported.status.status_code is StatusCode.UNSET


def test_without_a_traceparent_a_new_trace_starts_here() -> None:
    traces, exporter = tracer()
    fresh = request()
    finish(traces.start(fresh), status=503, route=None)
    (exported,) = exporter.get_finished_spans()
    assert exported.parent is None
    context = exported.get_span_context()
    header = parse_traceparent(fresh.header("traceparent"))
    assert (header.trace_id, header.span_id) == (context.trace_id, context.span_id) and header.sampled
    assert exported.name == "GET reviews.default.svc.cluster.local"  # no route: the host
    assert exported.status.status_code is StatusCode.ERROR


def test_an_unsampled_parent_is_honoured() -> None:
    traces, exporter = tracer()
    unsampled = request(("traceparent", f"00-{TRACE}-{PARENT}-00"))
    finish(traces.start(unsampled))
    assert exporter.get_finished_spans() == ()
    header = parse_traceparent(unsampled.header("traceparent"))
    assert header.trace_id == int(TRACE, 16) and not header.sampled and header.span_id != int(PARENT, 16)


def test_without_an_endpoint_the_sdk_is_not_even_imported() -> None:
    code = "import sys, dataplane.waypoint.app; print('opentelemetry.sdk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
