"""A target's whole Envoy configuration: Listeners, RouteConfigurations, Clusters, and
ClusterLoadAssignments.

Listener (reference grpc-proxyless-xds, "Listener", "HttpConnectionManager"): named as the channel
target, holding only `api_listener` (a Listener with an address is validated as a server listener
and NACKed) whose Any is an HttpConnectionManager that takes its routes through RDS over ADS
(`rds.config_source = {ads: {}, resource_api_version: V3}`, `route_config_name` = the listener
name). Its http_filters are the fault filter (an empty HTTPFault: per-route configs override it,
and a per-route config needs the filter listed) and the Router, which must be last; every filter
carries a `typed_config`.

RouteConfiguration: one virtual host whose domains are the host, `host:port` and `*` (so any
authority the client dials matches), with the HTTPRoute/GRPCRoute routes attached to the Service
port, or else the VirtualService routes for the host, and always a final catch-all to the port's
own cluster (a call no route matches fails with "No matching route found").
"""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf.message import Message

from .clusters import cluster, hash_policy, load_assignment, port_policy, subset_endpoints, subsets
from .gateway_routes import gateway_routes
from .lookup import Lookup
from .resources import FAULT_FILTER, ROUTER_FILTER, cluster_name, listener_name, pack
from .routing import Action, Match, http_retry_policy, route, route_matches
from .targets import Target, TargetPort
from .virtual_services import virtual_service_routes


def listener(name: str) -> listener_pb2.Listener:
    """An API listener whose HttpConnectionManager fetches route configuration `name` over ADS."""
    manager = hcm.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm.Rds(
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
            ),
            route_config_name=name,
        ),
        http_filters=[
            hcm.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
            hcm.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),  # the router is last
        ],
    )
    return listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener(api_listener=pack(manager)))


def routes_for(lookup: Lookup, target: Target, port: TargetPort) -> list[rc.Route]:
    """The port's routes: attached Gateway API routes, else VirtualService routes, then the
    catch-all to the port's own cluster."""
    routes = gateway_routes(lookup, target, port) or virtual_service_routes(lookup, target, port)
    own = Action(destinations=[(lookup.cluster(target.host, port.number), 1)])
    own.hash_policy = hash_policy(port_policy(lookup.destination_rule(target.host), port.number))
    if lookup.waypoint:
        own.retry = http_retry_policy(None, None)  # Istio's default retries apply to every HTTP route
    return [*routes, *(route("default", m, own) for m in route_matches(Match()))]


def route_configuration(
    name: str, target: Target, port: TargetPort, routes: list[rc.Route]
) -> route_pb2.RouteConfiguration:
    """One virtual host for the target, matching any authority the client uses."""
    host = rc.VirtualHost(name=name, domains=[target.host, f"{target.host}:{port.number}", "*"], routes=routes)
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[host])


def target_resources(lookup: Lookup, target: Target) -> list[Message]:
    """Everything one target serves: per port a listener `{host}:{port}` with its route
    configuration, a cluster and its endpoints (and one per DestinationRule subset); plus the
    listener `{host}` for the default port."""
    out: list[Message] = []
    dr = lookup.destination_rule(target.host)
    for port in target.ports:
        routes = routes_for(lookup, target, port)
        names = [listener_name(target.host, port.number)]
        if port == target.default_port:
            names.append(listener_name(target.host))
        for name in names:
            out += [listener(name), route_configuration(name, target, port, routes)]
        endpoints = target.endpoints.get(port.number, ())
        out.append(cluster(target.host, port.number, port_policy(dr, port.number)))
        out.append(load_assignment(cluster_name(target.host, port.number), endpoints))
        for subset in subsets(dr):
            policy = port_policy(dr, port.number, subset)
            out.append(cluster(target.host, port.number, policy, subset["name"]))
            picked = subset_endpoints(endpoints, subset.get("labels") or {})
            out.append(load_assignment(cluster_name(target.host, port.number, subset["name"]), picked))
    return out
