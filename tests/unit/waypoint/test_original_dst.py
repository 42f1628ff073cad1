"""Workload traffic on the waypoint side (docs/waypoint.md, "Workload traffic"): a chain without
`destination_port` carrying the pod in its `istio` metadata matches the pod IP on any port (a
Service's chain for the exact port wins), and an ORIGINAL_DST cluster goes with CLUSTER_PROVIDED;
the endpoint is the CONNECT's address with the chain's tunnel and identity."""

from __future__ import annotations

import random

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2

from dataplane.waypoint.config import CLUSTER_TYPE, LISTENER_TYPE, ConfigStore
from dataplane.waypoint.l7.upstreams import ClusterState, Endpoint, LbPolicy
from dataplane.waypoint.original_dst import at

pytestmark = pytest.mark.unit

POD_IP, VIP = "198.18.5.5", "198.19.0.10"
DB = "spiffe://cluster.local/ns/default/sa/db"


def pack(msg) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def chain(name: str, ip: str, port: int | None, route: str, pod: dict | None = None) -> lc.FilterChain:
    manager = hcm_pb2.HttpConnectionManager(stat_prefix=name, rds=hcm_pb2.Rds(route_config_name=route))
    manager.http_filters.add(name="envoy.filters.http.router")
    out = lc.FilterChain(name=name)
    out.filter_chain_match.prefix_ranges.add(address_prefix=ip).prefix_len.value = 32
    if port is not None:
        out.filter_chain_match.destination_port.value = port
    if pod is not None:
        out.metadata.filter_metadata["istio"].update(pod)
    out.filters.add(name="envoy.filters.network.http_connection_manager", typed_config=pack(manager))
    return out


def listener(*chains: lc.FilterChain) -> dict[str, any_pb2.Any]:
    return {"waypoint/default/wp": pack(listener_pb2.Listener(name="waypoint/default/wp", filter_chains=chains))}


POD = {"tunnel": "hbone", "identity": DB, "workload": "db-1", "namespace": "default"}


def test_a_workload_chain_matches_its_pod_ip_on_any_port() -> None:
    store = ConfigStore()
    workload = chain("workload/default/db-1", POD_IP, None, "inbound-pod", POD)
    service = chain("db.default.svc.cluster.local:5432", POD_IP, 5432, "inbound-vip|5432|http|db")
    assert store.apply(LISTENER_TYPE, listener(workload, service), ()) == []
    for port in (80, 8080, 15000):
        found = store.chain_for(POD_IP, port)
        assert found is not None and found.name == "workload/default/db-1" and found.port == 0
    assert store.chain_for(POD_IP, 5432).name == "db.default.svc.cluster.local:5432"  # exact port first
    assert store.chain_for("198.18.5.6", 80) is None
    found = store.chain_for(POD_IP, 80)
    assert found.host == ""  # no Service: telemetry reads `unknown`
    assert found.destination == Endpoint("", 0, "hbone", DB, workload="db-1", namespace="default")
    assert at(found.destination, POD_IP, 8080) == Endpoint(
        POD_IP, 8080, "hbone", DB, workload="db-1", namespace="default"
    )
    assert store.wanted()["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"] >= {"inbound-pod"}


@pytest.mark.parametrize(
    ("port", "pod", "reason"),
    [
        (None, None, "destination_port is required"),
        (None, {**POD, "tunnel": "gre"}, "tunnel 'gre' is not hbone or plaintext"),
    ],
)
def test_bad_workload_chains_are_refused(port: int | None, pod: dict | None, reason: str) -> None:
    store = ConfigStore()
    (rejection,) = store.apply(LISTENER_TYPE, listener(chain("w", POD_IP, port, "inbound-pod", pod)), ())
    assert reason in rejection and store.chain_for(POD_IP, 80) is None


def test_an_original_dst_cluster_is_cluster_provided() -> None:
    store = ConfigStore()
    good = cluster_pb2.Cluster(
        name="inbound-pod", type=cluster_pb2.Cluster.ORIGINAL_DST, lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED
    )
    round_robin = cluster_pb2.Cluster(name="rr", type=cluster_pb2.Cluster.ORIGINAL_DST)
    provided_eds = cluster_pb2.Cluster(
        name="eds", type=cluster_pb2.Cluster.EDS, lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED
    )
    rejections = store.apply(CLUSTER_TYPE, {c.name: pack(c) for c in (good, round_robin, provided_eds)}, ())
    assert sorted(r.split(":")[0] for r in rejections) == ["eds", "rr"]
    assert store.cluster("inbound-pod") is not None
    assert "inbound-pod" not in store.wanted()["type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"]
    state = ClusterState.build(good, clock=lambda: 0.0, rng=random.Random(0))
    assert state.lb_policy is LbPolicy.CLUSTER_PROVIDED and state.pick() is None  # the caller provides the host
