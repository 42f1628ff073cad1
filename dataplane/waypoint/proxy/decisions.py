"""Adapter between the proxy and the L7 decisions (dataplane/waypoint/l7/, helper C2's).

l7.rbac is used as is. Route selection, weighted clusters and header modifiers are needed by the
proxy before l7.routing exists; until it does, `select_route` below covers the contract's route
shape (path / prefix / safe_regex / path_separated_prefix, header and query matches through
l7.matchers, `cluster` / `weighted_clusters`, `direct_response`). When l7.routing lands, this
module is the one place to switch over.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

from ..l7 import matchers
from ..l7.model import Request


@dataclass(frozen=True)
class RouteChoice:
    """The route a request took: its entry, the cluster picked, and its name for logs."""

    route: route_components_pb2.Route
    cluster: str | None  # None for a direct_response
    name: str


def _path_matches(match: route_components_pb2.RouteMatch, path: str) -> bool:
    kind = match.WhichOneof("path_specifier")
    if kind == "prefix":
        return path.startswith(match.prefix)
    if kind == "path":
        return path == match.path
    if kind == "safe_regex":
        return re.fullmatch(match.safe_regex.regex, path) is not None
    if kind == "path_separated_prefix":
        prefix = match.path_separated_prefix
        return path == prefix or path.startswith(prefix.rstrip("/") + "/")
    return False


def route_matches(match: route_components_pb2.RouteMatch, request: Request) -> bool:
    """Envoy's RouteMatch over a request: path, then every header and query parameter."""
    if not _path_matches(match, request.url_path):
        return False
    for header in match.headers:
        if not matchers.header_matcher(header)(request):
            return False
    return all(matchers.query_parameter_matcher(q)(request) for q in match.query_parameters)


def pick_weighted(clusters: route_components_pb2.WeightedCluster, rng: random.Random) -> str:
    """A cluster of a weighted split, with probability weight / total."""
    entries = [(c.name, c.weight.value) for c in clusters.clusters if c.weight.value > 0]
    total = sum(w for _, w in entries)
    if not entries:
        return clusters.clusters[0].name
    point = rng.uniform(0, total)
    for name, weight in entries:
        point -= weight
        if point < 0:
            return name
    return entries[-1][0]


def select_route(config: route_pb2.RouteConfiguration, request: Request, rng: random.Random) -> RouteChoice | None:
    """The first matching route of the first virtual host whose domains match (`*` matches all)."""
    host = request.authority.rsplit(":", 1)[0] if request.authority else ""
    for vhost in config.virtual_hosts:
        if not any(d == "*" or d == host or d == request.authority for d in vhost.domains):
            continue
        for route in vhost.routes:
            if not route_matches(route.match, request):
                continue
            if route.HasField("direct_response"):
                return RouteChoice(route, None, route.name)
            action = route.route
            if action.HasField("weighted_clusters"):
                return RouteChoice(route, pick_weighted(action.weighted_clusters, rng), route.name)
            return RouteChoice(route, action.cluster, route.name)
        return None
    return None


def apply_header_modifiers(
    headers: list[tuple[str, str]], add: list[base_pb2.HeaderValueOption], remove: list[str]
) -> list[tuple[str, str]]:
    """Envoy's `*_headers_to_remove` then `*_headers_to_add` (append unless told to overwrite)."""
    drop = {name.lower() for name in remove}
    out = [(k, v) for k, v in headers if k not in drop]
    for option in add:
        name = option.header.key.lower()
        overwrite = option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD or (
            option.HasField("append") and not option.append.value
        )
        if overwrite:
            out = [(k, v) for k, v in out if k != name]
        out.append((name, option.header.value))
    return out
