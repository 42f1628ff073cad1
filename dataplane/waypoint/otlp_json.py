"""Spans to an OTLP/HTTP endpoint in OTLP's JSON encoding (Content-Type application/json).

Why not the `opentelemetry-exporter-otlp-proto-http` package: it needs `opentelemetry-proto`,
whose generated modules live at the same paths as the older copies `xds-protos` ships
(`opentelemetry/proto/...`), so whichever pip installs last wins and the other breaks. JSON is one
of OTLP/HTTP's two encodings; every collector accepts it. The mapping follows the OTLP
specification's JSON rules: lowerCamelCase field names, trace and span ids as hex strings, 64-bit
integers as decimal strings, enums as numbers.

`encode` is pure; `OtlpJsonExporter` is the SDK's SpanExporter (called from the
BatchSpanProcessor's thread, so a blocking POST is fine there).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

Json = dict[str, Any]


def value(v: Any) -> Json:
    """An OTLP AnyValue."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [value(x) for x in v]}}
    return {"stringValue": str(v)}


def attributes(attrs: Mapping[str, Any] | None) -> list[Json]:
    return [{"key": k, "value": value(v)} for k, v in (attrs or {}).items()]


def span_json(span: ReadableSpan) -> Json:
    context = span.get_span_context()
    out: Json = {
        "traceId": format(context.trace_id, "032x"),
        "spanId": format(context.span_id, "016x"),
        "name": span.name,
        "kind": span.kind.value + 1,  # the SDK counts from INTERNAL = 0; OTLP from UNSPECIFIED = 0
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": attributes(span.attributes),
        "status": {"code": span.status.status_code.value},
    }
    if span.parent is not None:
        out["parentSpanId"] = format(span.parent.span_id, "016x")
    if span.status.description:
        out["status"]["message"] = span.status.description
    return out


def encode(spans: Sequence[ReadableSpan]) -> Json:
    """An ExportTraceServiceRequest: spans grouped by resource, then by instrumentation scope."""
    by_resource: dict[int, tuple[Any, dict[tuple[str, str], list[Json]]]] = {}
    for span in spans:
        _, scopes = by_resource.setdefault(id(span.resource), (span.resource, {}))
        scope = span.instrumentation_scope
        key = (scope.name, scope.version or "") if scope is not None else ("", "")
        scopes.setdefault(key, []).append(span_json(span))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": attributes(resource.attributes if resource is not None else None)},
                "scopeSpans": [
                    {"scope": {"name": name, "version": version}, "spans": items}
                    for (name, version), items in scopes.items()
                ],
            }
            for resource, scopes in by_resource.values()
        ]
    }


class OtlpJsonExporter(SpanExporter):
    """POSTs each batch to `url` (…/v1/traces); a failed export is reported to the SDK, which
    drops the batch (tracing never holds requests back)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url
        self._client = httpx.Client(timeout=timeout)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = json.dumps(encode(spans)).encode()
        try:
            response = self._client.post(self._url, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if response.status_code < 300 else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._client.close()
