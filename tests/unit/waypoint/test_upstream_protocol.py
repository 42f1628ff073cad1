"""Which HTTP version a waypoint speaks to a Service's endpoints: mesh-xds writes it on the cluster
from the port's appProtocol or name (Istio's rule), and the waypoint reads it back."""

from __future__ import annotations

import random

import pytest

from dataplane.waypoint.l7.upstreams import ClusterState
from services.xds.generators.envoy.targets import TargetPort
from services.xds.generators.envoy.waypoint_clusters import waypoint_cluster
from services.xds.generators.envoy.waypoint_listeners import upstream_protocol


@pytest.mark.parametrize(
    ("port", "expected", "http2"),
    [
        (TargetPort(80, "http"), "http1", False),
        (TargetPort(80, "http-web"), "http1", False),
        (TargetPort(9090, "grpc"), "http2", True),
        (TargetPort(9090, "api", app_protocol="grpc"), "http2", True),
        (TargetPort(8080, "web", app_protocol="http2"), "http2", True),
        (TargetPort(8080, "tcp-db"), "auto", None),
        (TargetPort(8080, ""), "auto", None),
    ],
)
def test_the_port_decides_the_upstream_http_version(port: TargetPort, expected: str, http2: bool | None) -> None:
    assert upstream_protocol(port) == expected
    cluster = waypoint_cluster("web.default.svc.cluster.local", port.number, {}, protocol=expected)
    state = ClusterState.build(cluster, clock=lambda: 0.0, rng=random.Random(1))
    assert state.upstream_http2 is http2
