"""Spans from a real waypoint over OTLP/HTTP (docs/waypoint.md, "Telemetry"): the waypoint runs
with `MESH_OTLP_ENDPOINT` pointing at a tiny OTLP/HTTP receiver in the test (POST /v1/traces,
in OTLP's JSON encoding). A request sent with a traceparent yields one SERVER span in
that trace, child of the sender's span, and the traceparent the backend receives names the
waypoint's span as its parent."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dataplane.waypoint.proxy.messages import HttpRequest, HttpResponse
from tests.integration.waypoint_env import HOST, OK, SLEEP, V1, VIP, Backends, resources
from tests.integration.waypoint_process import Running, running_waypoint

pytestmark = pytest.mark.integration

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SPAN_KIND_SERVER = 2  # OTLP's SpanKind


class Receiver:
    """An OTLP/HTTP traces endpoint on loopback: every span posted to /v1/traces, with its
    resource attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, str], dict]] = []
        self.content_types: list[str] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.paths.append(self.path)
                receiver.content_types.append(self.headers.get("content-type", ""))
                request = json.loads(body)
                for resource_spans in request["resourceSpans"]:
                    attrs = {a["key"]: a["value"]["stringValue"] for a in resource_spans["resource"]["attributes"]}
                    for scope in resource_spans["scopeSpans"]:
                        receiver.spans += [(attrs, span) for span in scope["spans"]]
                reply = b"{}"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], dict]]:
        deadline = time.monotonic() + timeout
        while len(self.spans) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.spans)


class RecordingBackends(Backends):
    """waypoint_env's backends, keeping the traceparent of each request they answer."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.traceparents: list[str] = []

    async def _answer(self, ip: str, request: HttpRequest) -> HttpResponse:
        self.traceparents.append(request.header("traceparent") or "")
        return await super()._answer(ip, request)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Receiver]]:
    receiver = Receiver()
    receiver.thread.start()
    env = {"MESH_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    try:
        with running_waypoint(
            tmp_path_factory.mktemp("waypoint-tracing"), resources(), backends=RecordingBackends, env=env
        ) as running:
            yield running, receiver
    finally:
        receiver.server.shutdown()


def test_a_request_with_a_traceparent_gets_a_child_span_that_parents_the_next_hop(traced) -> None:
    waypoint, receiver = traced
    headers = (("traceparent", f"00-{TRACE}-{PARENT}-01"), ("x-request-id", "req-1"))
    status, _, body = waypoint.run(waypoint.request(f"{VIP}:80", HOST, "/hello?q=1", headers))
    assert (status, body) == (200, b"v1")

    ((resource, span),) = receiver.wait_for(1)
    assert receiver.paths == ["/v1/traces"] and receiver.content_types == ["application/json"]
    assert span["traceId"] == TRACE and span["parentSpanId"] == PARENT
    assert span["kind"] == SPAN_KIND_SERVER and span["name"] == "GET default"
    upstream = waypoint.backends.traceparents[-1]
    assert upstream == f"00-{TRACE}-{span['spanId']}-01"  # the backend's parent is the waypoint's span
    attributes = {a["key"]: a["value"] for a in span["attributes"]}
    assert attributes["http.request.method"] == {"stringValue": "GET"}
    assert attributes["url.path"] == {"stringValue": "/hello"}
    assert attributes["http.response.status_code"] == {"intValue": "200"}
    assert attributes["server.address"] == {"stringValue": HOST}
    assert attributes["upstream_cluster"] == {"stringValue": V1}
    assert attributes["response_flags"] == {"stringValue": "-"}
    assert attributes["istio.source_principal"] == {"stringValue": str(SLEEP)}
    assert attributes["guid:x-request-id"] == {"stringValue": "req-1"}
    assert resource["service.name"] == "wp.default"
    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0
    assert waypoint.backends.seen[OK] >= 1


def test_a_request_without_a_traceparent_starts_a_trace_at_the_waypoint(traced) -> None:
    waypoint, receiver = traced
    before = len(receiver.spans)
    status, _, _ = waypoint.run(waypoint.request(f"{VIP}:80", HOST, "/fresh"))
    assert status == 200
    spans = receiver.wait_for(before + 1)
    _, span = spans[-1]
    assert "parentSpanId" not in span and span["traceId"] != TRACE
    version, trace_id, parent_id, _flags = waypoint.backends.traceparents[-1].split("-")
    assert (version, trace_id, parent_id) == ("00", span["traceId"], span["spanId"])
