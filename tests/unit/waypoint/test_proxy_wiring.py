"""The proxy's own decisions around the L7 engine: local replies shaped for gRPC, and cluster
states that follow the config store in place (stats and ejections survive a push)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import any_pb2

from dataplane.waypoint.config import CLUSTER_TYPE, ENDPOINT_TYPE, ConfigStore
from dataplane.waypoint.l7.model import UpstreamResult
from dataplane.waypoint.proxy.clusters import UpstreamClusters
from dataplane.waypoint.proxy.local_reply import grpc_message, local_reply


def pack(msg) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def test_local_replies_for_http_and_grpc() -> None:
    http = local_reply(False, 403, "RBAC: access denied", flags="RBAC")
    assert (http.status, http.body, http.flags) == (403, b"RBAC: access denied", "RBAC")
    assert ("content-type", "text/plain") in http.headers

    denied = local_reply(True, 403, "RBAC: access denied")
    assert (denied.status, denied.body) == (200, b"")  # trailers-only, as Envoy answers gRPC
    assert dict(denied.headers)["grpc-status"] == "7"
    assert dict(local_reply(True, 503, "no healthy upstream").headers)["grpc-status"] == "14"
    assert dict(local_reply(True, 401, "x", headers=[("www-authenticate", "Bearer")]).headers)["grpc-status"] == "16"
    assert grpc_message("100% é") == "100%25 %C3%A9"


def _cla(*ips: str) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c")
    locality = cla.endpoints.add()
    for ip in ips:
        lb = endpoint_components_pb2.LbEndpoint()
        lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value = ip, 80
        locality.lb_endpoints.append(lb)
    return cla


def test_cluster_states_are_updated_in_place() -> None:
    store = ConfigStore()
    cluster = cluster_pb2.Cluster(name="c", type=cluster_pb2.Cluster.EDS)
    cluster.outlier_detection.consecutive_5xx.value = 1
    cluster.common_lb_config.healthy_panic_threshold.SetInParent()
    store.apply(CLUSTER_TYPE, {"c": pack(cluster)}, set())
    store.apply(ENDPOINT_TYPE, {"c": pack(_cla("10.0.0.1", "10.0.0.2"))}, set())
    now = [0.0]
    clusters = UpstreamClusters(store, clock=lambda: now[0])
    state = clusters.get("c")
    assert state is not None and len(state.endpoints) == 2
    bad = next(e for e in state.endpoints if e.address == "10.0.0.2")
    state.request_started(bad)
    state.request_finished(bad, UpstreamResult(status=503))
    assert [e.address for e in state.ejected()] == ["10.0.0.2"]

    store.apply(ENDPOINT_TYPE, {"c": pack(_cla("10.0.0.1", "10.0.0.2", "10.0.0.3"))}, set())
    cluster.lb_policy = cluster_pb2.Cluster.RANDOM
    store.apply(CLUSTER_TYPE, {"c": pack(cluster)}, set())
    again = clusters.get("c")
    assert again is state and len(state.endpoints) == 3 and state.lb_policy.name == "RANDOM"
    assert [e.address for e in state.ejected()] == ["10.0.0.2"]  # the ejection survived the push
    assert all(state.pick().address != "10.0.0.2" for _ in range(50))

    store.apply(CLUSTER_TYPE, {}, {"c"})
    assert clusters.get("c") is None
