"""An upstream cluster's live state: endpoints, load balancing, circuit breakers and outlier
detection, built from a Cluster and its ClusterLoadAssignment.

`ClusterState(cluster, assignment, clock=..., rng=...)`; per request the proxy calls
`breakers.try_acquire(Resource.REQUESTS)` (False → answer 503, response flag UO), `pick()`
(None → 503, flag UH), `request_started(ep)`, then `request_finished(ep, result)`, and releases
the breaker token. A new ClusterLoadAssignment goes to `update_assignment` (stats of endpoints
that stay are kept), a new Cluster to `update_cluster`.

Envoy's rules followed here:
- endpoints: `lb_endpoints` whose health_status is UNKNOWN, HEALTHY or DEGRADED; the lowest
  priority that has an available endpoint serves; the `istio` filter metadata gives the tunnel
  (`hbone` / `plaintext`), the SPIFFE identity to expect, and the pod (`workload`, `namespace`);
- panic: when the available share falls below `common_lb_config.healthy_panic_threshold`
  (default 50 %; Istio sets 0, which disables it) the ejected endpoints are used too;
- ROUND_ROBIN rotates, LEAST_REQUEST takes the least busy of `choice_count` (2) random draws,
  RANDOM draws uniformly; a retry may exclude the hosts already tried;
- circuit breakers: the DEFAULT-priority thresholds, Envoy's defaults 1024 connections, 1024
  pending requests, 1024 requests, 3 retries;
- outlier detection (when `outlier_detection` is set): the `consecutive_5xx`-th (default 5)
  consecutive 5xx of an endpoint ejects it (enforced with `enforcing_consecutive_5xx` %, default
  100); likewise `consecutive_gateway_failure` (502/503/504; enforcement default 0 %); local
  failures count as 503 (504 for a timeout) unless `split_external_local_origin_errors`;
  ejection is refused above `max_ejection_percent` (default 10) except that one host may always
  be ejected; every `interval` (default 10 s) a sweep returns hosts ejected for at least
  `base_ejection_time` (30 s) × their ejection count (capped at `max_ejection_time`, 300 s), and
  lowers the count of hosts that stayed healthy for an interval.
"""

from __future__ import annotations

import enum
import ipaddress
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from .model import ConfigError, UpstreamFailure, UpstreamResult

OVERFLOW_FLAG = "UO"  # Envoy's response flag: upstream overflow (circuit breaker)
NO_HEALTHY_FLAG = "UH"  # no healthy upstream host
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_PANIC_THRESHOLD = 50.0
_AVAILABLE = {health_check_pb2.UNKNOWN, health_check_pb2.HEALTHY, health_check_pb2.DEGRADED}
_MAX_SWEEPS_PER_TICK = 1000  # after a long idle period, the missed sweeps are collapsed


class LbPolicy(enum.Enum):
    """The load-balancing policies this engine implements (Cluster.LbPolicy)."""

    ROUND_ROBIN = cluster_pb2.Cluster.ROUND_ROBIN
    LEAST_REQUEST = cluster_pb2.Cluster.LEAST_REQUEST
    RANDOM = cluster_pb2.Cluster.RANDOM
    # An ORIGINAL_DST cluster's: the host is the connection's original destination, which the
    # caller supplies (proxy/forward.py); `pick` has no endpoints to choose from.
    CLUSTER_PROVIDED = cluster_pb2.Cluster.CLUSTER_PROVIDED


class Resource(enum.Enum):
    """What a circuit breaker counts (CircuitBreakers.Thresholds)."""

    CONNECTIONS = "max_connections"
    PENDING_REQUESTS = "max_pending_requests"
    REQUESTS = "max_requests"
    RETRIES = "max_retries"


_BREAKER_DEFAULTS = {
    Resource.CONNECTIONS: 1024,
    Resource.PENDING_REQUESTS: 1024,
    Resource.REQUESTS: 1024,
    Resource.RETRIES: 3,
}


@dataclass(frozen=True)
class Endpoint:
    """One upstream endpoint: where to connect and how (tunnel, expected identity)."""

    address: str
    port: int
    tunnel: str = "hbone"
    identity: str | None = None
    weight: int = 1
    priority: int = 0
    available: bool = True
    workload: str | None = None  # the pod's name (`istio` metadata), for telemetry
    namespace: str | None = None
    # Where to dial HBONE when it is not `{address}:15008` (`istio` metadata `hbone_address`): a
    # waypoint behind an ingress gateway, whose endpoints all carry the Service's VIP as `address`
    # (the `:authority`) and the waypoint pod's `ip:15008` here (docs/ingress.md, contract 3).
    hbone_address: tuple[str, int] | None = None

    @property
    def key(self) -> tuple[str, int, str]:
        """What identifies the endpoint across assignments (two waypoint pods share `address`)."""
        hbone = f"{self.hbone_address[0]}:{self.hbone_address[1]}" if self.hbone_address else ""
        return (self.address, self.port, hbone)


@dataclass
class EndpointStats:
    """Mutable per-endpoint counters (kept across assignments while the endpoint stays)."""

    active_requests: int = 0
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    consecutive_local: int = 0
    ejected_at: float | None = None
    ejection_backoff: int = 0  # multiplier of base_ejection_time; decays while healthy
    times_ejected: int = 0
    last_unejected: float | None = None

    @property
    def ejected(self) -> bool:
        """Whether outlier detection has taken the endpoint out of rotation."""
        return self.ejected_at is not None


class CircuitBreakers:
    """Counters against the DEFAULT-priority thresholds. Overflow is the caller's 503 UO."""

    def __init__(self, thresholds: circuit_breaker_pb2.CircuitBreakers | None = None):
        self.limits = dict(_BREAKER_DEFAULTS)
        self.in_use = dict.fromkeys(Resource, 0)
        self.overflows = dict.fromkeys(Resource, 0)
        self.configure(thresholds)

    def configure(self, thresholds: circuit_breaker_pb2.CircuitBreakers | None) -> None:
        """Take new limits; what is in use stays counted."""
        self.limits = dict(_BREAKER_DEFAULTS)
        for t in thresholds.thresholds if thresholds is not None else ():
            if t.priority != base_pb2.DEFAULT:
                continue
            for resource in Resource:
                if t.HasField(resource.value):
                    self.limits[resource] = getattr(t, resource.value).value

    def try_acquire(self, resource: Resource) -> bool:
        """Take one unit, or count an overflow and return False when at the limit."""
        if self.in_use[resource] >= self.limits[resource]:
            self.overflows[resource] += 1
            return False
        self.in_use[resource] += 1
        return True

    def release(self, resource: Resource) -> None:
        """Give back a unit taken with try_acquire."""
        self.in_use[resource] = max(0, self.in_use[resource] - 1)

    def remaining(self, resource: Resource) -> int:
        """Units left before overflow."""
        return max(0, self.limits[resource] - self.in_use[resource])


@dataclass(frozen=True, kw_only=True)
class OutlierConfig:
    """OutlierDetection with Envoy's defaults filled in (durations in seconds)."""

    consecutive_5xx: int = 5
    enforcing_consecutive_5xx: int = 100
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_gateway_failure: int = 0
    consecutive_local_origin_failure: int = 5
    enforcing_consecutive_local_origin_failure: int = 100
    split_local_origin: bool = False
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10

    @classmethod
    def from_proto(cls, od: outlier_detection_pb2.OutlierDetection) -> OutlierConfig:
        """Read the fields that are set; the rest keep Envoy's defaults."""
        values: dict[str, object] = {}
        for name in (
            "consecutive_5xx",
            "enforcing_consecutive_5xx",
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
            "consecutive_local_origin_failure",
            "enforcing_consecutive_local_origin_failure",
            "max_ejection_percent",
        ):
            if od.HasField(name):
                values[name] = getattr(od, name).value
        for name in ("interval", "base_ejection_time", "max_ejection_time"):
            if od.HasField(name):
                values[name] = getattr(od, name).ToTimedelta().total_seconds()
        values["split_local_origin"] = od.split_external_local_origin_errors
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class _Settings:
    lb: LbPolicy
    choice_count: int
    panic_threshold: float
    connect_timeout: float
    outlier: OutlierConfig | None
    http2: bool | None = None  # the HTTP version to speak upstream; None: the downstream's


HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _upstream_http2(cluster: cluster_pb2.Cluster) -> bool | None:
    """True for explicit HTTP/2, False for explicit HTTP/1.1, None to follow the downstream."""
    packed = cluster.typed_extension_protocol_options.get(HTTP_PROTOCOL_OPTIONS)
    if packed is None:
        return None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if not packed.Unpack(options):
        raise ConfigError(f"cluster {cluster.name}: {HTTP_PROTOCOL_OPTIONS} does not hold HttpProtocolOptions")
    if options.WhichOneof("upstream_protocol_options") == "explicit_http_config":
        return options.explicit_http_config.WhichOneof("protocol_config") == "http2_protocol_options"
    return None


def _settings(cluster: cluster_pb2.Cluster) -> _Settings:
    try:
        lb = LbPolicy(cluster.lb_policy)
    except ValueError:
        name = cluster_pb2.Cluster.LbPolicy.Name(cluster.lb_policy)
        raise ConfigError(f"cluster {cluster.name}: lb_policy {name} is not supported") from None
    lr = cluster.least_request_lb_config
    common = cluster.common_lb_config
    return _Settings(
        lb=lb,
        choice_count=lr.choice_count.value if lr.HasField("choice_count") else 2,
        panic_threshold=(
            common.healthy_panic_threshold.value
            if common.HasField("healthy_panic_threshold")
            else DEFAULT_PANIC_THRESHOLD
        ),
        connect_timeout=(
            cluster.connect_timeout.ToTimedelta().total_seconds()
            if cluster.HasField("connect_timeout")
            else DEFAULT_CONNECT_TIMEOUT
        ),
        outlier=OutlierConfig.from_proto(cluster.outlier_detection) if cluster.HasField("outlier_detection") else None,
        http2=_upstream_http2(cluster),
    )


def endpoints_from_assignment(cla: endpoint_pb2.ClusterLoadAssignment) -> list[Endpoint]:
    """The endpoints of a ClusterLoadAssignment, in order, with their `istio` metadata."""
    found = []
    for locality in cla.endpoints:
        for lb in locality.lb_endpoints:
            if lb.WhichOneof("host_identifier") != "endpoint":
                raise ConfigError(f"{cla.cluster_name}: only inline endpoints are supported")
            socket = lb.endpoint.address.socket_address
            if not lb.endpoint.address.HasField("socket_address"):
                raise ConfigError(f"{cla.cluster_name}: endpoint without a socket address")
            istio = lb.metadata.filter_metadata["istio"].fields if "istio" in lb.metadata.filter_metadata else {}
            tunnel = istio["tunnel"].string_value if "tunnel" in istio else "hbone"
            identity = istio["identity"].string_value if "identity" in istio else None
            weight = lb.load_balancing_weight.value if lb.HasField("load_balancing_weight") else 1
            available = lb.health_status in _AVAILABLE
            workload = istio["workload"].string_value if "workload" in istio else None
            namespace = istio["namespace"].string_value if "namespace" in istio else None
            hbone = None
            if "hbone_address" in istio:
                hbone = _hbone_address(cla.cluster_name, istio["hbone_address"].string_value)
            found.append(
                Endpoint(
                    socket.address,
                    socket.port_value,
                    tunnel,
                    identity,
                    weight,
                    locality.priority,
                    available,
                    workload or None,
                    namespace or None,
                    hbone,
                )
            )
    return found


def _hbone_address(cluster: str, value: str) -> tuple[str, int]:
    """`ip:port` or `[ipv6]:port` from the `hbone_address` metadata (ConfigError otherwise)."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ConfigError(f"{cluster}: hbone_address {value!r} is not IP:PORT") from None
    if not sep or not 0 < number < 65536:
        raise ConfigError(f"{cluster}: hbone_address {value!r} is not IP:PORT")
    return host, number


@dataclass
class ClusterState:
    """One cluster's endpoints and counters. Not thread-safe: the proxy uses it from its one
    event loop. `clock` returns monotonic seconds; `rng` drives every random choice."""

    name: str
    clock: Callable[[], float]
    rng: random.Random
    breakers: CircuitBreakers
    settings: _Settings
    endpoints: list[Endpoint] = field(default_factory=list)
    stats: dict[tuple[str, int], EndpointStats] = field(default_factory=dict)
    _rr_index: int = 0
    _next_sweep: float = 0.0

    @classmethod
    def build(
        cls,
        cluster: cluster_pb2.Cluster,
        assignment: endpoint_pb2.ClusterLoadAssignment | None = None,
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> ClusterState:
        """State for a Cluster and its endpoints (the assignment, else the cluster's inline
        `load_assignment`)."""
        settings = _settings(cluster)
        state = cls(cluster.name, clock, rng, CircuitBreakers(cluster.circuit_breakers), settings)
        state._next_sweep = clock() + (settings.outlier.interval if settings.outlier else 0)
        if assignment is None and cluster.HasField("load_assignment"):
            assignment = cluster.load_assignment
        if assignment is not None:
            state.update_assignment(assignment)
        return state

    @property
    def lb_policy(self) -> LbPolicy:
        """The load-balancing policy in force."""
        return self.settings.lb

    @property
    def upstream_http2(self) -> bool | None:
        """The HTTP version the cluster asks for upstream (None: the downstream's)."""
        return self.settings.http2

    @property
    def connect_timeout(self) -> float:
        """Seconds allowed to connect to an endpoint (Cluster.connect_timeout, default 5)."""
        return self.settings.connect_timeout

    # --- updates ---------------------------------------------------------------------------------

    def update_assignment(self, cla: endpoint_pb2.ClusterLoadAssignment) -> None:
        """Replace the endpoints; endpoints that stay keep their stats (ejection included)."""
        self.endpoints = endpoints_from_assignment(cla)
        self.stats = {ep.key: self.stats.get(ep.key) or EndpointStats() for ep in self.endpoints}

    def update_cluster(self, cluster: cluster_pb2.Cluster) -> None:
        """Take a changed Cluster (policy, breaker limits, outlier settings); counters stay."""
        had_outlier = self.settings.outlier is not None
        self.settings = _settings(cluster)
        self.breakers.configure(cluster.circuit_breakers)
        if self.settings.outlier is None:
            for stats in self.stats.values():
                stats.ejected_at = None
        elif not had_outlier:
            self._next_sweep = self.clock() + self.settings.outlier.interval

    # --- picking ---------------------------------------------------------------------------------

    def ejected(self) -> list[Endpoint]:
        """The endpoints outlier detection has ejected."""
        self.tick()
        return [ep for ep in self.endpoints if self.stats[ep.key].ejected]

    def pick(self, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """An endpoint for the next request, or None when there is none to use. `exclude` (the
        hosts a retry already tried) is honoured when another host is left."""
        self.tick()
        candidates = self._candidates()
        if exclude:
            others = [ep for ep in candidates if ep not in exclude]
            candidates = others or candidates
        if not candidates:
            return None
        if self.settings.lb is LbPolicy.RANDOM:
            return self.rng.choice(candidates)
        if self.settings.lb is LbPolicy.LEAST_REQUEST:
            draws = [self.rng.choice(candidates) for _ in range(max(1, self.settings.choice_count))]
            return min(draws, key=lambda ep: self.stats[ep.key].active_requests)
        chosen = candidates[self._rr_index % len(candidates)]
        self._rr_index += 1
        return chosen

    def _candidates(self) -> list[Endpoint]:
        usable = [ep for ep in self.endpoints if ep.available]
        healthy = [ep for ep in usable if not self.stats[ep.key].ejected]
        if not usable:
            return []
        if 100.0 * len(healthy) / len(usable) < self.settings.panic_threshold:
            healthy = usable  # panic: every host takes traffic, as Envoy does
        if not healthy:
            return []
        top = min(ep.priority for ep in healthy)
        return [ep for ep in healthy if ep.priority == top]

    # --- results ---------------------------------------------------------------------------------

    def request_started(self, endpoint: Endpoint) -> None:
        """Count a request in flight on an endpoint (LEAST_REQUEST reads it)."""
        stats = self.stats.get(endpoint.key)
        if stats is not None:
            stats.active_requests += 1

    def request_finished(self, endpoint: Endpoint, result: UpstreamResult) -> None:
        """Count a request's end and feed its outcome to outlier detection."""
        stats = self.stats.get(endpoint.key)
        if stats is None:  # the endpoint left the assignment meanwhile
            return
        stats.active_requests = max(0, stats.active_requests - 1)
        self.tick()
        outlier = self.settings.outlier
        if outlier is None or result.failure is UpstreamFailure.OVERFLOW:
            return  # an overflow never reached the host
        if result.failure is not None and outlier.split_local_origin:
            stats.consecutive_local += 1
            if stats.consecutive_local == outlier.consecutive_local_origin_failure:
                self._maybe_eject(stats, outlier.enforcing_consecutive_local_origin_failure)
            return
        status = result.effective_status
        if result.failure is None and outlier.split_local_origin:
            stats.consecutive_local = 0  # a response means the connection worked
        if not 500 <= status <= 599:
            stats.consecutive_5xx = stats.consecutive_gateway = 0
            return
        stats.consecutive_5xx += 1
        stats.consecutive_gateway = stats.consecutive_gateway + 1 if status in (502, 503, 504) else 0
        # Envoy fires each detector once, when its counter reaches the threshold exactly.
        if stats.consecutive_5xx == outlier.consecutive_5xx:
            self._maybe_eject(stats, outlier.enforcing_consecutive_5xx)
        if stats.consecutive_gateway == outlier.consecutive_gateway_failure:
            self._maybe_eject(stats, outlier.enforcing_consecutive_gateway_failure)

    def _maybe_eject(self, stats: EndpointStats, enforcing_percent: int) -> None:
        outlier = self.settings.outlier
        if outlier is None or stats.ejected or self.rng.randrange(100) >= enforcing_percent:
            return
        ejected_now = sum(1 for s in self.stats.values() if s.ejected)
        share = 100.0 * (ejected_now + 1) / max(1, len(self.stats))
        if share > outlier.max_ejection_percent and ejected_now > 0:
            return  # max_ejection_percent, but one host may always be ejected
        stats.ejected_at = self.clock()
        stats.ejection_backoff += 1
        stats.times_ejected += 1

    def tick(self) -> None:
        """Run the outlier-detection sweeps that are due (each `interval`); called by pick and
        request_finished, and safe to call from a timer."""
        outlier = self.settings.outlier
        if outlier is None:
            return
        now = self.clock()
        sweeps = 0
        while self._next_sweep <= now:
            if sweeps == _MAX_SWEEPS_PER_TICK:
                self._next_sweep = now
            self._sweep(self._next_sweep, outlier)
            self._next_sweep += outlier.interval
            sweeps += 1

    def _sweep(self, at: float, outlier: OutlierConfig) -> None:
        for stats in self.stats.values():
            if stats.ejected_at is None:
                healthy_since = stats.last_unejected
                if stats.ejection_backoff and healthy_since is not None and at - healthy_since >= outlier.interval:
                    stats.ejection_backoff -= 1
                continue
            cap = max(outlier.base_ejection_time, outlier.max_ejection_time)
            if at - stats.ejected_at >= min(outlier.base_ejection_time * stats.ejection_backoff, cap):
                stats.ejected_at = None
                stats.last_unejected = at
                stats.consecutive_5xx = stats.consecutive_gateway = stats.consecutive_local = 0
