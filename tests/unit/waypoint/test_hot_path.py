"""The per-request shortcuts of the hot path (docs/waypoint.md, "The hot path") keep behaviour."""

from __future__ import annotations

import random
import uuid

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2

from dataplane.waypoint.l7.model import Request
from dataplane.waypoint.l7.routing import RouteTable
from dataplane.waypoint.proxy.messages import HttpRequest
from dataplane.waypoint.proxy.pipeline import _add_request_headers, _uuid4
from dataplane.waypoint.telemetry import Metrics, RequestRecord, Source


def test_request_ids_are_version_4_uuids_and_traceparents_are_w3c() -> None:
    rng = random.Random(7)
    for _ in range(200):
        bits = rng.getrandbits(128)
        text = _uuid4(bits)
        assert str(uuid.UUID(int=bits, version=4)) == text
    request = HttpRequest("GET", "/", "a", [("x-forwarded-proto", "https")])
    _add_request_headers(request, rng)
    names = [k for k, _ in request.headers]
    assert names == ["x-forwarded-proto", "x-request-id", "traceparent"]
    assert request.header("x-forwarded-proto") == "http"
    assert uuid.UUID(request.header("x-request-id")).version == 4
    version, trace, parent, flags = request.header("traceparent").split("-")
    assert (version, len(trace), len(parent), flags) == ("00", 32, 16, "01")


def _record(status: int) -> RequestRecord:
    return RequestRecord(
        source=Source("spiffe://cluster.local/ns/default/sa/sleep", "sleep", "default", None, None, None),
        service_host="echo.default.svc.cluster.local",
        destination_principal=None,
        destination_workload=None,
        destination_namespace=None,
        destination_cluster="Kubernetes",
        protocol="http",
        status=status,
        grpc_status=None,
        flags="-",
        duration_ms=1.0,
        request_bytes=10,
        response_bytes=20,
    )


def test_cached_metric_children_count_each_label_set() -> None:
    metrics = Metrics()
    for status in (200, 200, 503):
        metrics.record(_record(status))
    text = metrics.exposition().decode()
    ok = [
        line for line in text.splitlines() if line.startswith("istio_requests_total") and 'response_code="200"' in line
    ]
    bad = [
        line for line in text.splitlines() if line.startswith("istio_requests_total") and 'response_code="503"' in line
    ]
    assert ok[0].endswith(" 2.0") and bad[0].endswith(" 1.0")


def _l7(authority: str) -> Request:
    return Request(method="GET", path="/x", authority=authority, headers=[], destination_port=80, source_ip="10.0.0.1")


def test_cached_route_parts_and_virtual_hosts_give_the_same_decisions() -> None:
    config = route_pb2.RouteConfiguration(name="r")
    exact = config.virtual_hosts.add(name="exact", domains=["a.example"])
    exact.routes.add(name="a", match=rc_pb2.RouteMatch(prefix="/")).route.cluster = "ca"
    other = config.virtual_hosts.add(name="any", domains=["*"])
    route = other.routes.add(name="b", match=rc_pb2.RouteMatch(prefix="/"))
    route.route.cluster = "cb"
    route.route.timeout.FromMilliseconds(250)
    table = RouteTable(config)
    rng = random.Random(1)
    for _ in range(3):
        a = table.route(_l7("a.example"), rng)
        b = table.route(_l7("b.example:80"), rng)
        assert (a.virtual_host, a.cluster, a.timeout) == ("exact", "ca", 15.0)
        assert (b.virtual_host, b.cluster, b.timeout) == ("any", "cb", 0.25)
