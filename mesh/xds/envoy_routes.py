"""What an Envoy RouteConfiguration refers to, read the same way by mesh-xds (which clusters to
generate for a waypoint or gateway) and by the waypoint (which clusters to subscribe to)."""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2


def route_clusters(route_config: route_pb2.RouteConfiguration) -> set[str]:
    """Every cluster a RouteConfiguration sends (or mirrors) traffic to: routes, weighted splits,
    mirrors."""
    names: set[str] = set()
    for vhost in route_config.virtual_hosts:
        for route in vhost.routes:
            if not route.HasField("route"):
                continue
            action = route.route
            if action.cluster:
                names.add(action.cluster)
            names.update(w.name for w in action.weighted_clusters.clusters)
            names.update(m.cluster for m in action.request_mirror_policies if m.cluster)
    return names
