"""The waypoint's configuration model: Envoy v3 resources from mesh-xds, converted at the edge.

docs/waypoint.md, "Configuration from mesh-xds (contract)": a Listener `waypoint/N/G` whose filter
chains match (VIP, port) and carry an HttpConnectionManager (codec, RDS name, and the jwt_authn,
rbac, fault, router filters); RouteConfigurations; Clusters; ClusterLoadAssignments with the
endpoints' tunnel and identity in `filter_metadata["istio"]`. An ingress gateway's Listener
`gateway/N/G` (docs/ingress.md, "Data path (contract)") matches by port and SNI instead of VIP, its
HTTPS chains name SDS Secrets (ingress/tls_config.py), and those Secrets are held here too.

`ConfigStore.apply` converts a delta of one type outside any shared state, then swaps it in; what
cannot be converted is returned as `"name: reason"` so the xDS client NACKs it by name while the
previous version of that resource stays in force (STYLE: ztunnel's store). Conversion compiles
the L7 engine (l7/) once per resource: a chain's `Authenticator` and `RbacEngine`, a route
config's `RouteTable`; Clusters and assignments are checked the way `l7.upstreams` will read them
(the live `ClusterState`s are proxy/clusters.py's). What the engine refuses (`l7.model.ConfigError`)
is NACKed. Not thread-safe: the event loop owns it.
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, message

from mesh.xds.envoy_routes import route_clusters

from .ingress.tls_config import DownstreamTls, Secret, TlsConfigError, downstream_tls, secret_from_proto
from .l7 import upstreams
from .l7.jwt import Authenticator
from .l7.model import ConfigError
from .l7.rbac import RbacEngine
from .l7.routing import RouteTable
from .original_dst import OriginalDstError, chain_destination, check_cluster

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE, SECRET_TYPE)

HCM_FILTER = "envoy.filters.network.http_connection_manager"
JWT_FILTER = "envoy.filters.http.jwt_authn"
RBAC_FILTER = "envoy.filters.http.rbac"
FAULT_FILTER = "envoy.filters.http.fault"
ROUTER_FILTER = "envoy.filters.http.router"
_KNOWN_HTTP_FILTERS = (JWT_FILTER, RBAC_FILTER, FAULT_FILTER, ROUTER_FILTER)
_CODECS = {hcm_pb2.HttpConnectionManager.AUTO: "auto", hcm_pb2.HttpConnectionManager.HTTP1: "http1"}
_CODECS[hcm_pb2.HttpConnectionManager.HTTP2] = "http2"


class ConfigRejected(ValueError):
    """A resource the waypoint cannot use; the message is what the NACK says."""


@dataclass(frozen=True)
class FilterChain:
    """One (service, port) bound to the waypoint, or one listener of an ingress Gateway: where
    its requests go and what they pass."""

    name: str  # {host}:{port}
    vips: frozenset[str]
    port: int
    codec: str  # auto | http1 | http2
    stat_prefix: str
    route_config_name: str
    jwt: jwt_pb2.JwtAuthentication | None = None
    rbac: tuple[rbac_pb2.RBAC, ...] = ()  # in filter order: DENY, then ALLOW
    fault: bool = False
    # A workload chain's pod (original_dst.py); its `port` is 0: the chain matches any port.
    destination: upstreams.Endpoint | None = None
    server_names: tuple[str, ...] = ()  # SNI names (ingress HTTPS chains); empty: the port's default
    tls: DownstreamTls | None = None  # ingress HTTPS chains: the Secrets to terminate TLS with
    # Compiled from the two above; JWT expiry is checked against the wall clock.
    authenticator: Authenticator | None = field(default=None, compare=False, repr=False)
    rbac_engine: RbacEngine = field(default_factory=lambda: RbacEngine(()), compare=False, repr=False)

    @property
    def host(self) -> str:
        """The service hostname (`{host}:{port}` without the port); empty for a workload chain."""
        if self.destination is not None:
            return ""
        return self.name.rpartition(":")[0] or self.name


@dataclass(frozen=True)
class RouteConfig:
    """A RouteConfiguration and its compiled RouteTable."""

    proto: route_pb2.RouteConfiguration
    table: RouteTable


@dataclass
class Snapshot:
    """Everything held, by resource name; replaced piecewise by `ConfigStore.apply`."""

    listeners: dict[str, tuple[FilterChain, ...]] = field(default_factory=dict)
    routes: dict[str, RouteConfig] = field(default_factory=dict)
    clusters: dict[str, cluster_pb2.Cluster] = field(default_factory=dict)
    assignments: dict[str, endpoint_pb2.ClusterLoadAssignment] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)


def _unpack(any_msg: any_pb2.Any, cls: type[message.Message], what: str) -> message.Message:
    out = cls()
    if not any_msg.Unpack(out):
        raise ConfigRejected(f"{what}: expected {cls.DESCRIPTOR.full_name}, got {any_msg.type_url}")
    return out


def _http_filters(hcm: hcm_pb2.HttpConnectionManager, where: str) -> dict[str, object]:
    jwt: jwt_pb2.JwtAuthentication | None = None
    rbac: list[rbac_pb2.RBAC] = []
    fault = False
    for f in hcm.http_filters:
        if f.name == JWT_FILTER:
            jwt = _unpack(f.typed_config, jwt_pb2.JwtAuthentication, f"{where} {f.name}")
        elif f.name == RBAC_FILTER:
            rbac.append(_unpack(f.typed_config, rbac_pb2.RBAC, f"{where} {f.name}"))
        elif f.name == FAULT_FILTER:
            fault = True
        elif f.name != ROUTER_FILTER and not f.is_optional:
            raise ConfigRejected(
                f"{where}: unsupported http filter {f.name!r} (known: {', '.join(_KNOWN_HTTP_FILTERS)})"
            )
    try:
        authenticator = Authenticator(jwt, clock=time.time) if jwt is not None else None
        engine = RbacEngine(rbac)
    except ConfigError as e:
        raise ConfigRejected(f"{where}: {e}") from None
    return {"jwt": jwt, "rbac": tuple(rbac), "fault": fault, "authenticator": authenticator, "rbac_engine": engine}


def filter_chain(chain: listener_pb2.FilterChain) -> FilterChain:
    """One Listener filter chain as the proxy uses it (ConfigRejected when it is not the shape
    of the contract)."""
    where = f"filter chain {chain.name!r}"
    match = chain.filter_chain_match
    try:
        destination = chain_destination(chain)
    except OriginalDstError as e:
        raise ConfigRejected(f"{where}: {e}") from None
    if not match.HasField("destination_port") and destination is None:
        raise ConfigRejected(f"{where}: filter_chain_match.destination_port is required (or the pod's metadata)")
    vips = set()
    for prefix in match.prefix_ranges:
        try:
            vips.add(str(ipaddress.ip_address(prefix.address_prefix)))
        except ValueError:
            raise ConfigRejected(f"{where}: prefix {prefix.address_prefix!r} is not an IP address") from None
    hcm_filters = [f for f in chain.filters if f.name == HCM_FILTER]
    if len(hcm_filters) != 1:
        raise ConfigRejected(f"{where}: expected one {HCM_FILTER} filter, found {len(hcm_filters)}")
    hcm = _unpack(hcm_filters[0].typed_config, hcm_pb2.HttpConnectionManager, where)
    if not hcm.HasField("rds") or not hcm.rds.route_config_name:
        raise ConfigRejected(f"{where}: the HttpConnectionManager has no rds.route_config_name")
    codec = _CODECS.get(hcm.codec_type)
    if codec is None:
        raise ConfigRejected(f"{where}: codec_type {hcm.codec_type} is not supported")
    try:
        tls = downstream_tls(chain)
    except TlsConfigError as e:
        raise ConfigRejected(f"{where}: {e}") from None
    return FilterChain(
        name=chain.name,
        vips=frozenset(vips),
        port=match.destination_port.value,
        codec=codec,
        stat_prefix=hcm.stat_prefix,
        route_config_name=hcm.rds.route_config_name,
        destination=destination,
        server_names=tuple(name.lower() for name in match.server_names),
        tls=tls,
        **_http_filters(hcm, where),  # type: ignore[arg-type]
    )


def _checked_cluster(cluster: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
    if cluster.type not in (cluster_pb2.Cluster.EDS, cluster_pb2.Cluster.STATIC, cluster_pb2.Cluster.ORIGINAL_DST):
        raise ConfigRejected(f"cluster type {cluster_pb2.Cluster.DiscoveryType.Name(cluster.type)} is not supported")
    try:
        check_cluster(cluster)
    except OriginalDstError as e:
        raise ConfigRejected(str(e)) from None
    try:  # what ClusterState will refuse (an lb policy it does not implement, a bad endpoint)
        upstreams.ClusterState.build(cluster, clock=time.monotonic, rng=random.Random(0))
    except ConfigError as e:
        raise ConfigRejected(str(e)) from None
    return cluster


def _checked_assignment(cla: endpoint_pb2.ClusterLoadAssignment) -> endpoint_pb2.ClusterLoadAssignment:
    try:
        found = upstreams.endpoints_from_assignment(cla)
    except ConfigError as e:
        raise ConfigRejected(str(e)) from None
    for endpoint in found:
        if not endpoint.address or not endpoint.port:
            raise ConfigRejected(f"endpoint without a socket address in {cla.cluster_name!r}")
        if endpoint.tunnel not in ("hbone", "plaintext"):
            raise ConfigRejected(f"endpoint {endpoint.address}: tunnel {endpoint.tunnel!r} is not hbone or plaintext")
    return cla


def _convert(type_url: str, name: str, resource: any_pb2.Any) -> object:
    if type_url == LISTENER_TYPE:
        listener = _unpack(resource, listener_pb2.Listener, name)
        return tuple(filter_chain(chain) for chain in listener.filter_chains)
    if type_url == ROUTE_TYPE:
        proto = _unpack(resource, route_pb2.RouteConfiguration, name)
        try:
            return RouteConfig(proto, RouteTable(proto))
        except ConfigError as e:
            raise ConfigRejected(str(e)) from None
    if type_url == CLUSTER_TYPE:
        return _checked_cluster(_unpack(resource, cluster_pb2.Cluster, name))
    if type_url == ENDPOINT_TYPE:
        return _checked_assignment(_unpack(resource, endpoint_pb2.ClusterLoadAssignment, name))
    if type_url == SECRET_TYPE:
        try:
            return secret_from_proto(resource)
        except TlsConfigError as e:
            raise ConfigRejected(str(e)) from None
    raise ConfigRejected(f"type {type_url} is not one the waypoint asks for")


class ConfigStore:
    """The waypoint's config, with the (VIP, port) index the proxy looks chains up by."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()
        self._chains: dict[tuple[str, int], FilterChain] = {}
        self.version = 0  # bumped on every change; consumers rebuild what they derived

    def _table(self, type_url: str) -> dict:
        return {
            LISTENER_TYPE: self.snapshot.listeners,
            ROUTE_TYPE: self.snapshot.routes,
            CLUSTER_TYPE: self.snapshot.clusters,
            ENDPOINT_TYPE: self.snapshot.assignments,
            SECRET_TYPE: self.snapshot.secrets,
        }[type_url]

    def apply(self, type_url: str, updated: dict[str, any_pb2.Any], removed: Iterable[str]) -> list[str]:
        """Apply one delta; the refused resources come back as `"name: reason"` (and keep their
        previous version)."""
        converted: dict[str, object] = {}
        rejections: list[str] = []
        for name, resource in updated.items():
            try:
                converted[name] = _convert(type_url, name, resource)
            except (ConfigRejected, message.DecodeError) as e:
                rejections.append(f"{name}: {e}")
        if type_url not in TYPES:
            return rejections
        table = self._table(type_url)
        table.update(converted)
        for name in removed:
            table.pop(name, None)
        if type_url == LISTENER_TYPE:
            self._chains = {
                (vip, chain.port): chain for chains in table.values() for chain in chains for vip in chain.vips
            }
        self.version += 1
        return rejections

    def chain_for(self, vip: str, port: int) -> FilterChain | None:
        """The filter chain for a CONNECT to `vip:port`, if one is bound: a Service's for that port,
        else a workload chain's (port 0: any port)."""
        return self._chains.get((vip, port)) or self._chains.get((vip, 0))

    def route_table(self, name: str) -> RouteTable | None:
        """The compiled route config of that name, if held."""
        held = self.snapshot.routes.get(name)
        return held.table if held is not None else None

    def chains_by_port(self) -> dict[int, tuple[FilterChain, ...]]:
        """Every chain by its destination port, in listener order (an ingress gateway listens
        on each of these ports)."""
        ports: dict[int, list[FilterChain]] = {}
        for chains in self.snapshot.listeners.values():
            for chain in chains:
                ports.setdefault(chain.port, []).append(chain)
        return {port: tuple(chains) for port, chains in ports.items()}

    def secret(self, name: str) -> Secret | None:
        """The SDS Secret of that name, if held."""
        return self.snapshot.secrets.get(name)

    def cluster(self, name: str) -> cluster_pb2.Cluster | None:
        return self.snapshot.clusters.get(name)

    def assignment(self, name: str) -> endpoint_pb2.ClusterLoadAssignment | None:
        """The cluster's ClusterLoadAssignment (EDS); None for a STATIC cluster or until it came."""
        return self.snapshot.assignments.get(name)

    def wanted(self) -> dict[str, set[str]]:
        """The names to subscribe to per type, as what is held names them: the listeners' route
        configs and Secrets, the routes' clusters, the EDS clusters' assignments."""
        snap = self.snapshot
        routes = {chain.route_config_name for chains in snap.listeners.values() for chain in chains}
        secrets = set(self._secret_names())
        clusters: set[str] = set()
        for name in routes:
            if name in snap.routes:
                clusters |= route_clusters(snap.routes[name].proto)
        eds = {
            name
            for name in clusters
            if (c := snap.clusters.get(name)) is not None and c.type == cluster_pb2.Cluster.EDS
        }
        return {ROUTE_TYPE: routes, CLUSTER_TYPE: clusters, ENDPOINT_TYPE: eds, SECRET_TYPE: secrets}

    def _secret_names(self) -> list[str]:
        return [
            name
            for chains in self.snapshot.listeners.values()
            for chain in chains
            if chain.tls is not None
            for name in chain.tls.secret_names
        ]

    @property
    def has_listener_and_routes(self) -> bool:
        """Readiness (contract): the Listener arrived and every route config it names."""
        snap = self.snapshot
        if not snap.listeners:
            return False
        return all(chain.route_config_name in snap.routes for chains in snap.listeners.values() for chain in chains)

    @property
    def complete(self) -> bool:
        """Readiness (contracts): the Listener, every route config it names and every Secret its
        TLS chains name have arrived."""
        return self.has_listener_and_routes and all(name in self.snapshot.secrets for name in self._secret_names())
