"""The config model: Envoy resources in, filter chains by (VIP, port), subscriptions that follow
what is held, refused resources named while the previous version stays."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, struct_pb2

from dataplane.waypoint.config import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ConfigStore,
)
from dataplane.waypoint.l7.upstreams import endpoints_from_assignment


def pack(msg) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def listener(route_name: str = "inbound-vip|80|http|a.ns.svc.cluster.local", extra_filter: str | None = None):
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="a:80", rds=hcm_pb2.Rds(route_config_name=route_name))
    hcm.codec_type = hcm_pb2.HttpConnectionManager.HTTP2
    hcm.http_filters.add(name="envoy.filters.http.rbac", typed_config=pack(rbac_pb2.RBAC()))
    if extra_filter:
        hcm.http_filters.add(name=extra_filter)
    hcm.http_filters.add(name="envoy.filters.http.router")
    chain = listener_components_pb2.FilterChain(name="a.ns.svc.cluster.local:80")
    chain.filter_chain_match.prefix_ranges.add(address_prefix="10.96.0.1").prefix_len.value = 32
    chain.filter_chain_match.destination_port.value = 80
    chain.filters.add(name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm))
    return pack(listener_pb2.Listener(name="waypoint/ns/wp", filter_chains=[chain]))


def test_listener_to_chains_and_subscriptions() -> None:
    store = ConfigStore()
    assert store.apply(LISTENER_TYPE, {"waypoint/ns/wp": listener()}, set()) == []
    chain = store.chain_for("10.96.0.1", 80)
    assert chain is not None and chain.codec == "http2" and len(chain.rbac) == 1
    assert chain.host == "a.ns.svc.cluster.local"
    assert store.chain_for("10.96.0.1", 81) is None
    assert store.wanted()[ROUTE_TYPE] == {"inbound-vip|80|http|a.ns.svc.cluster.local"}
    assert not store.has_listener_and_routes

    vhost = route_components_pb2.VirtualHost(name="a", domains=["*"])
    route = vhost.routes.add(match=route_components_pb2.RouteMatch(prefix="/"))
    route.route.weighted_clusters.clusters.add(name="c1").weight.value = 1
    route.route.weighted_clusters.clusters.add(name="c2").weight.value = 1
    route.route.request_mirror_policies.add(cluster="mirror")
    rc = route_pb2.RouteConfiguration(name="inbound-vip|80|http|a.ns.svc.cluster.local", virtual_hosts=[vhost])
    store.apply(ROUTE_TYPE, {rc.name: pack(rc)}, set())
    assert store.has_listener_and_routes
    assert store.wanted()[CLUSTER_TYPE] == {"c1", "c2", "mirror"}

    store.apply(CLUSTER_TYPE, {"c1": pack(cluster_pb2.Cluster(name="c1", type=cluster_pb2.Cluster.EDS))}, set())
    assert store.wanted()[ENDPOINT_TYPE] == {"c1"}
    lb = endpoint_components_pb2.LbEndpoint()
    lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value = "10.1.0.5", 8080
    lb.metadata.filter_metadata["istio"].CopyFrom(
        struct_pb2.Struct(
            fields={
                "tunnel": struct_pb2.Value(string_value="hbone"),
                "identity": struct_pb2.Value(string_value="spiffe://cluster.local/ns/ns/sa/a"),
            }
        )
    )
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c1")
    cla.endpoints.add().lb_endpoints.append(lb)
    store.apply(ENDPOINT_TYPE, {"c1": pack(cla)}, set())
    (endpoint,) = endpoints_from_assignment(store.assignment("c1"))
    assert (endpoint.address, endpoint.port, endpoint.tunnel, endpoint.identity) == (
        "10.1.0.5",
        8080,
        "hbone",
        "spiffe://cluster.local/ns/ns/sa/a",
    )


def test_what_the_l7_engine_refuses_is_nacked() -> None:
    store = ConfigStore()
    maglev = cluster_pb2.Cluster(name="c1", type=cluster_pb2.Cluster.EDS, lb_policy=cluster_pb2.Cluster.MAGLEV)
    (rejection,) = store.apply(CLUSTER_TYPE, {"c1": pack(maglev)}, set())
    assert rejection.startswith("c1: ") and "MAGLEV" in rejection
    assert store.cluster("c1") is None

    vhost = route_components_pb2.VirtualHost(name="a", domains=["*"])
    vhost.routes.add(match=route_components_pb2.RouteMatch(prefix="/")).non_forwarding_action.SetInParent()
    rc = route_pb2.RouteConfiguration(name="r", virtual_hosts=[vhost])
    (rejection,) = store.apply(ROUTE_TYPE, {"r": pack(rc)}, set())
    assert rejection.startswith("r: ") and "not supported" in rejection
    assert store.route_table("r") is None


def test_refused_listener_is_named_and_the_old_one_kept() -> None:
    store = ConfigStore()
    store.apply(LISTENER_TYPE, {"waypoint/ns/wp": listener()}, set())
    rejections = store.apply(LISTENER_TYPE, {"waypoint/ns/wp": listener(extra_filter="envoy.filters.http.lua")}, set())
    assert len(rejections) == 1 and rejections[0].startswith("waypoint/ns/wp: ")
    assert "envoy.filters.http.lua" in rejections[0]
    assert store.chain_for("10.96.0.1", 80) is not None  # the previous version still serves

    wrong = any_pb2.Any(type_url="type.googleapis.com/envoy.config.route.v3.RouteConfiguration", value=b"\xff")
    assert store.apply(LISTENER_TYPE, {"waypoint/ns/other": wrong}, set())[0].startswith("waypoint/ns/other: ")


def test_removal_drops_the_chain() -> None:
    store = ConfigStore()
    store.apply(LISTENER_TYPE, {"waypoint/ns/wp": listener()}, set())
    store.apply(LISTENER_TYPE, {}, {"waypoint/ns/wp"})
    assert store.chain_for("10.96.0.1", 80) is None
    assert store.wanted()[ROUTE_TYPE] == set()
