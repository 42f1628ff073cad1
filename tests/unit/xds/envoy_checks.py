"""The rules a proxyless gRPC client holds Envoy resources to, as a checker for the translation
tests: every NACK cause and every "accepted but unusable" cause of
../shared/reference/grpc-proxyless-xds.md ("Rejections and failures"), plus the ones found in the
interop test (an EDS locality must be set), and closure: whatever one resource names exists."""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2, health_check_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf.message import Message

from services.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def manager_of(listener: Message) -> hcm.HttpConnectionManager:
    """The HttpConnectionManager inside an API listener."""
    assert listener.HasField("api_listener") and not listener.HasField("address"), listener.name
    manager = hcm.HttpConnectionManager()
    assert listener.api_listener.api_listener.Unpack(manager), "api_listener must hold an HttpConnectionManager"
    return manager


def check_listener(listener: Message) -> str:
    """Returns the route configuration the listener names."""
    manager = manager_of(listener)
    assert manager.HasField("rds"), "routes come through RDS"
    source = manager.rds.config_source
    assert source.HasField("ads") and source.resource_api_version == config_source_pb2.V3
    assert manager.rds.route_config_name == listener.name
    filters = list(manager.http_filters)
    assert filters, "expected at least one HTTP filter"
    assert all(f.HasField("typed_config") for f in filters), "every filter needs typed_config"
    assert [f.typed_config.type_url for f in filters] == [FAULT, ROUTER], "fault, then the router last"
    assert filters[-1].typed_config.Unpack(router_pb2.Router())
    return manager.rds.route_config_name


def _check_match(match: rc.RouteMatch) -> None:
    assert match.WhichOneof("path_specifier") in ("prefix", "path", "safe_regex")
    assert not match.query_parameters
    for header in match.headers:
        assert header.WhichOneof("header_match_specifier") in ("string_match", "present_match")


def _catch_all(route: rc.Route) -> bool:
    return route.match.prefix in ("", "/") and not route.match.headers


def check_route_configuration(config: Message, host_names: set[str]) -> set[str]:
    """Returns the clusters the routes name."""
    clusters: set[str] = set()
    assert len(config.virtual_hosts) == 1
    vhost = config.virtual_hosts[0]
    assert "*" in vhost.domains and set(vhost.domains) & host_names
    assert vhost.routes and _catch_all(vhost.routes[-1]), "the last route catches every call"
    for route in vhost.routes:
        _check_match(route.match)
        assert route.WhichOneof("action") == "route", "only route actions work for gRPC"
        action = route.route
        if action.HasField("weighted_clusters"):
            weights = [c.weight.value for c in action.weighted_clusters.clusters]
            assert weights and all(w > 0 for w in weights), "no cluster with weight 0"
            clusters |= {c.name for c in action.weighted_clusters.clusters}
        else:
            assert action.WhichOneof("cluster_specifier") == "cluster"
            clusters.add(action.cluster)
        assert set(route.typed_per_filter_config) <= {"envoy.filters.http.fault"}
        for config_any in route.typed_per_filter_config.values():
            assert config_any.Unpack(fault_pb2.HTTPFault())
        if action.HasField("retry_policy"):
            names = action.retry_policy.retry_on.split(",")
            assert set(names) <= {"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
    return clusters


def check_cluster(cluster: Message) -> None:
    assert cluster.type == cluster_pb2.Cluster.EDS
    source = cluster.eds_cluster_config.eds_config
    assert source.HasField("ads") and source.resource_api_version == config_source_pb2.V3
    assert cluster.lb_policy in (cluster_pb2.Cluster.ROUND_ROBIN, cluster_pb2.Cluster.RING_HASH)


def check_load_assignment(cla: Message) -> None:
    for locality in cla.endpoints:
        assert locality.HasField("locality"), "gRPC NACKs a locality that is not set"
        assert locality.load_balancing_weight.value > 0, "a locality without weight is dropped"
        for lb in locality.lb_endpoints:
            assert lb.health_status == health_check_pb2.HEALTHY
            assert lb.endpoint.address.socket_address.port_value > 0


def check_all(resources: Mapping[str, Mapping[str, Message]]) -> None:
    """Every resource is acceptable, and the set is closed under the names resources use."""
    listeners, routes = resources[LISTENER], resources[ROUTE]
    clusters, endpoints = resources[CLUSTER], resources[ENDPOINT]
    for name, listener in listeners.items():
        assert check_listener(listener) in routes, f"{name}: its route configuration exists"
    for name, config in routes.items():
        host = name.rsplit(":", 1)[0] if name.rsplit(":", 1)[-1].isdigit() else name
        referenced = check_route_configuration(config, {host, name})
        assert referenced <= set(clusters), f"{name} names clusters CDS lacks: {referenced - set(clusters)}"
    for name, cluster in clusters.items():
        check_cluster(cluster)
        assert name in endpoints, f"{name} has its ClusterLoadAssignment"
    for name, cla in endpoints.items():
        assert cla.cluster_name == name
        check_load_assignment(cla)
