"""OTLP JSON encoding of the waypoint's spans (the OTLP specification's JSON mapping)."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from dataplane.waypoint.otlp_json import encode


def test_a_server_span_with_a_remote_parent_is_encoded_as_otlp_json() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "wp.default"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    parent = trace.SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True, trace_flags=trace.TraceFlags(1)
    )
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    span = provider.get_tracer("waypoint").start_span("GET web", context=context, kind=SpanKind.SERVER)
    span.set_attributes({"http.response.status_code": 503, "url.path": "/x", "retried": True, "ratio": 0.5})
    span.set_status(Status(StatusCode.ERROR, "upstream reset"))
    span.end()

    doc = encode(memory.get_finished_spans())
    (resource_spans,) = doc["resourceSpans"]
    resource = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "wp.default"}
    ((out,),) = [scope["spans"] for scope in resource_spans["scopeSpans"]]
    assert out["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert out["parentSpanId"] == "00f067aa0ba902b7"
    assert len(out["spanId"]) == 16 and out["spanId"] != out["parentSpanId"]
    assert out["kind"] == 2  # SPAN_KIND_SERVER
    assert out["status"] == {"code": 2, "message": "upstream reset"}  # STATUS_CODE_ERROR
    attrs = {a["key"]: a["value"] for a in out["attributes"]}
    assert attrs == {
        "http.response.status_code": {"intValue": "503"},
        "url.path": {"stringValue": "/x"},
        "retried": {"boolValue": True},
        "ratio": {"doubleValue": 0.5},
    }
    assert int(out["endTimeUnixNano"]) >= int(out["startTimeUnixNano"]) > 0
