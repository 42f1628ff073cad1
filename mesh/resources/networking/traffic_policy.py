"""Traffic policies of a DestinationRule (top level, per subset and per port): load balancing,
connection pools, outlier detection, client TLS, tunnelling - with the rules of Istio's
validateTrafficPolicy and the helpers it calls.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from ..base import Cause, Model, forbidden, invalid
from .checks import check_duration, fqdn_error, is_ip, port_error, required_because
from .common import Duration, Int32, Percent, PortSelector, UInt32, UInt64, duration_nanos
from .locality import LocalityLoadBalancerSetting, check_locality_lb


class ClientTLSSettings(Model):
    """TLS towards the upstream: mode, certificates (or a credential) and verification."""

    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] | None = None
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] | None = None
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None


# --- load balancing ------------------------------------------------------------------------------


class CookieAttribute(Model):
    """An extra attribute of the hash cookie (`SameSite=Strict`...)."""

    name: str
    value: str | None = None


class HTTPCookie(Model):
    """The cookie consistent hashing keys on (generated when absent)."""

    name: str | None = None
    path: str | None = None
    ttl: Duration | None = None
    attributes: list[CookieAttribute] | None = None


class RingHash(Model):
    """Ketama ring hash."""

    minimum_ring_size: UInt64 | None = None


class MagLev(Model):
    """Maglev consistent hashing."""

    table_size: UInt64 | None = None


class ConsistentHashLB(Model):
    """Session affinity: one hash key and at most one hash algorithm."""

    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: UInt64 | None = None  # deprecated in favour of ringHash


class WarmupConfiguration(Model):
    """Slow start for new endpoints."""

    duration: Duration | None = None
    minimum_percent: float | None = None
    aggression: float | None = None


class LoadBalancerSettings(Model):
    """A `simple` policy or `consistentHash`, plus locality and warm-up settings."""

    simple: Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"] | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    warmup_duration_secs: Duration | None = None
    warmup: WarmupConfiguration | None = None


# --- connection pool and outlier detection -------------------------------------------------------


class TcpKeepalive(Model):
    """TCP keepalive probing of upstream connections."""

    probes: UInt32 | None = None
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(Model):
    """Limits that apply to every TCP connection to the host."""

    max_connections: Int32 | None = None
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: Duration | None = None


class HTTPSettings(Model):
    """Limits that apply to HTTP/1.1, HTTP/2 and gRPC traffic to the host."""

    http1_max_pending_requests: Int32 | None = None
    http2_max_requests: Int32 | None = None
    max_requests_per_connection: Int32 | None = None
    max_retries: Int32 | None = None
    idle_timeout: Duration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: Int32 | None = None


class ConnectionPoolSettings(Model):
    """Circuit-breaker style limits on connections and requests."""

    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Model):
    """Ejection of misbehaving endpoints from the load-balancing pool."""

    consecutive_errors: Int32 | None = None  # deprecated
    split_external_local_origin_errors: bool | None = None
    consecutive_local_origin_failures: UInt32 | None = None
    consecutive_gateway_errors: UInt32 | None = None
    # "5xx" is not a word boundary for the camelCase generator, so the alias is spelled out.
    consecutive_5xx_errors: UInt32 | None = Field(default=None, alias="consecutive5xxErrors")
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: Int32 | None = None
    min_health_percent: Int32 | None = None


# --- traffic policy ------------------------------------------------------------------------------


class PortTrafficPolicy(Model):
    """A traffic policy that applies to one port of the host."""

    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TunnelSettings(Model):
    """Tunnel the connection through an HTTP CONNECT or POST proxy."""

    protocol: str | None = None
    target_host: str
    target_port: UInt32


class ProxyProtocol(Model):
    """Send a PROXY protocol header upstream."""

    version: Literal["V1", "V2"] | None = None


class RetryBudget(Model):
    """Cap on concurrent retries relative to active requests."""

    percent: Percent | None = None
    min_retry_concurrency: UInt32 | None = None


class TrafficPolicy(Model):
    """Policies applied to traffic for the host (or a subset)."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] | None = None
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None


# --- rules ---------------------------------------------------------------------------------------

# Envoy refuses Maglev tables this large; the size must also be prime.
_MAGLEV_MAX = 5000011


def check_traffic_policy(path: str, policy: TrafficPolicy | None, namespace: str) -> list[Cause]:
    """A traffic policy sets at least one field, and each part follows Istio's rules."""
    if policy is None:
        return []
    parts = (policy.load_balancer, policy.connection_pool, policy.outlier_detection, policy.tls)
    extras = (policy.port_level_settings, policy.tunnel, policy.proxy_protocol, policy.retry_budget)
    if not any(p is not None for p in parts) and not any(extras):
        return [required_because(path, "a traffic policy must set at least one field")]
    if policy.tunnel is not None and policy.proxy_protocol is not None:
        return [forbidden(f"{path}.proxyProtocol", "may not be set together with tunnel")]
    causes = _policy_part_causes(path, policy, namespace)
    for k, port_policy in enumerate(policy.port_level_settings or []):
        causes += _port_policy_causes(f"{path}.portLevelSettings[{k}]", port_policy, namespace)
    return causes + _tunnel_causes(f"{path}.tunnel", policy.tunnel)


def _policy_part_causes(path: str, policy: TrafficPolicy | PortTrafficPolicy, namespace: str) -> list[Cause]:
    causes = _outlier_causes(f"{path}.outlierDetection", policy.outlier_detection)
    causes += _connection_pool_causes(f"{path}.connectionPool", policy.connection_pool)
    causes += _load_balancer_causes(f"{path}.loadBalancer", policy.load_balancer, policy.outlier_detection)
    return causes + check_client_tls(f"{path}.tls", policy.tls, namespace)


def _port_policy_causes(path: str, policy: PortTrafficPolicy, namespace: str) -> list[Cause]:
    causes = []
    if policy.port is None:
        causes.append(required_because(f"{path}.port", "a port traffic policy needs a port"))
    parts = (policy.outlier_detection, policy.connection_pool, policy.load_balancer, policy.tls)
    if all(p is None for p in parts):
        why = "a port traffic policy must set loadBalancer, connectionPool, outlierDetection or tls"
        return [*causes, required_because(path, why)]
    return causes + _policy_part_causes(path, policy, namespace)


def _outlier_causes(path: str, od: OutlierDetection | None) -> list[Cause]:
    if od is None:
        return []
    causes = check_duration(f"{path}.baseEjectionTime", od.base_ejection_time)
    causes += check_duration(f"{path}.interval", od.interval)
    if (od.consecutive_local_origin_failures or 0) > 0 and not od.split_external_local_origin_errors:
        why = "only counts when splitExternalLocalOriginErrors is true"
        causes.append(invalid(f"{path}.consecutiveLocalOriginFailures", od.consecutive_local_origin_failures, why))
    for field, value in (
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ):
        if value is not None and not 0 <= value <= 100:
            causes.append(invalid(f"{path}.{field}", value, "must be a percentage between 0 and 100"))
    return causes


def _negative_causes(path: str, fields: dict[str, int | None]) -> list[Cause]:
    return [invalid(f"{path}.{name}", v, "must be non-negative") for name, v in fields.items() if (v or 0) < 0]


def _http_pool_causes(path: str, settings: HTTPSettings) -> list[Cause]:
    causes = _negative_causes(
        path,
        {
            "http1MaxPendingRequests": settings.http1_max_pending_requests,
            "http2MaxRequests": settings.http2_max_requests,
            "maxRequestsPerConnection": settings.max_requests_per_connection,
            "maxRetries": settings.max_retries,
            "maxConcurrentStreams": settings.max_concurrent_streams,
        },
    )
    causes += check_duration(f"{path}.idleTimeout", settings.idle_timeout)
    if settings.h2_upgrade_policy == "UPGRADE" and settings.use_client_protocol:
        causes.append(forbidden(f"{path}.useClientProtocol", "may not be true when h2UpgradePolicy is UPGRADE"))
    return causes


def _tcp_pool_causes(path: str, settings: TCPSettings) -> list[Cause]:
    causes = _negative_causes(path, {"maxConnections": settings.max_connections})
    causes += check_duration(f"{path}.connectTimeout", settings.connect_timeout)
    causes += check_duration(f"{path}.maxConnectionDuration", settings.max_connection_duration)
    # An idle timeout of 0 turns the timeout off; anything else must be a real duration.
    if settings.idle_timeout is not None and abs(duration_nanos(settings.idle_timeout) or 0) // 1_000_000:
        causes += check_duration(f"{path}.idleTimeout", settings.idle_timeout)
    if settings.tcp_keepalive is not None:
        causes += check_duration(f"{path}.tcpKeepalive.time", settings.tcp_keepalive.time)
        causes += check_duration(f"{path}.tcpKeepalive.interval", settings.tcp_keepalive.interval)
    return causes


def _connection_pool_causes(path: str, pool: ConnectionPoolSettings | None) -> list[Cause]:
    if pool is None:
        return []
    if pool.http is None and pool.tcp is None:
        return [required_because(path, "a connection pool must set tcp and/or http")]
    causes = _http_pool_causes(f"{path}.http", pool.http) if pool.http else []
    return causes + (_tcp_pool_causes(f"{path}.tcp", pool.tcp) if pool.tcp else [])


def _one_of(path: str, fields: dict[str, object]) -> list[Cause]:
    """A protobuf oneof: at most one of `fields` may be set."""
    present = [name for name, value in fields.items() if value is not None]
    return [forbidden(f"{path}.{name}", f"may not be set together with {present[0]}") for name in present[1:]]


def _is_prime(n: int) -> bool:
    if n < 4:
        return n != 0  # Envoy's check counts 1 as prime
    if n % 2 == 0:
        return False
    return all(n % f for f in range(3, math.isqrt(n) + 1, 2))


def _consistent_hash_causes(path: str, ch: ConsistentHashLB) -> list[Cause]:
    keys = {
        "httpHeaderName": ch.http_header_name,
        "httpCookie": ch.http_cookie,
        "useSourceIp": ch.use_source_ip,
        "httpQueryParameterName": ch.http_query_parameter_name,
    }
    causes = _one_of(path, keys) + _one_of(path, {"ringHash": ch.ring_hash, "maglev": ch.maglev})
    if ch.http_cookie is not None and not ch.http_cookie.name:
        causes.append(required_because(f"{path}.httpCookie.name", "the hash cookie needs a name"))
    if ch.minimum_ring_size and (ch.ring_hash is not None or ch.maglev is not None):
        causes.append(forbidden(f"{path}.minimumRingSize", "may not be set together with ringHash or maglev"))
    if ch.maglev is not None:
        size = ch.maglev.table_size or 0
        if size == 0:
            causes.append(required_because(f"{path}.maglev.tableSize", "maglev needs a table size"))
        elif size >= _MAGLEV_MAX or not _is_prime(size):
            causes.append(invalid(f"{path}.maglev.tableSize", size, f"must be a prime number below {_MAGLEV_MAX}"))
    return causes


def _warmup_causes(path: str, warmup: WarmupConfiguration) -> list[Cause]:
    if warmup.duration is None:
        causes = [required_because(f"{path}.duration", "a warm-up needs a duration")]
    else:
        causes = check_duration(f"{path}.duration", warmup.duration)
    if warmup.minimum_percent is not None and warmup.minimum_percent > 100:
        causes.append(invalid(f"{path}.minimumPercent", warmup.minimum_percent, "must be at most 100"))
    if warmup.aggression is not None and warmup.aggression < 1:
        causes.append(invalid(f"{path}.aggression", warmup.aggression, "must be at least 1"))
    return causes


def _load_balancer_causes(path: str, lb: LoadBalancerSettings | None, od: OutlierDetection | None) -> list[Cause]:
    if lb is None:
        return []
    causes = _one_of(path, {"simple": lb.simple, "consistentHash": lb.consistent_hash})
    if lb.consistent_hash is not None:
        causes += _consistent_hash_causes(f"{path}.consistentHash", lb.consistent_hash)
    if lb.locality_lb_setting is not None:
        causes += check_locality_lb(f"{path}.localityLbSetting", lb.locality_lb_setting)
    if lb.warmup is not None:
        causes += _warmup_causes(f"{path}.warmup", lb.warmup)
    return causes


# --- client TLS and tunnels ----------------------------------------------------------------------


def _configmap_credential_causes(path: str, credential: str, namespace: str) -> list[Cause]:
    # A CA bundle from a ConfigMap may only come from the rule's own namespace.
    ref = credential.removeprefix("configmap://")
    ns, _, name = ref.rpartition("/")
    if not name or "/" in ns:
        return [invalid(path, credential, "must be configmap://<name> or configmap://<namespace>/<name>")]
    if ns and namespace and ns != namespace:
        return [invalid(path, credential, f"the ConfigMap must be in the rule's namespace {namespace!r}")]
    return []


def _skip_verify_causes(path: str, tls: ClientTLSSettings) -> list[Cause]:
    # Skipping verification contradicts settings whose only purpose is verification.
    if not tls.insecure_skip_verify:
        return []
    if tls.mode == "SIMPLE" and (tls.ca_certificates or tls.credential_name or tls.subject_alt_names):
        why = "caCertificates, credentialName and subjectAltNames are meaningless when verification is skipped"
        return [forbidden(f"{path}.insecureSkipVerify", why)]
    if tls.mode == "MUTUAL" and (tls.ca_certificates or tls.subject_alt_names):
        why = "caCertificates and subjectAltNames cannot be used when insecureSkipVerify is true"
        return [forbidden(f"{path}.insecureSkipVerify", why)]
    return []


def check_client_tls(path: str, tls: ClientTLSSettings | None, namespace: str) -> list[Cause]:
    """Istio's ValidateTLS for upstream TLS settings."""
    if tls is None:
        return []
    causes: list[Cause] = []
    if tls.credential_name and tls.credential_name.startswith("configmap://"):
        causes += _configmap_credential_causes(f"{path}.credentialName", tls.credential_name, namespace)
    causes += _skip_verify_causes(path, tls)
    if tls.mode in ("SIMPLE", "MUTUAL") and tls.credential_name:
        # With a credential the proxy fetches certificates itself; inline files would be ignored.
        if tls.client_certificate or tls.ca_certificates or tls.private_key or tls.ca_crl:
            why = "clientCertificate, privateKey, caCertificates and caCrl cannot be used with credentialName"
            causes.append(forbidden(f"{path}.credentialName", why))
        return causes
    if tls.mode == "MUTUAL":
        if not tls.client_certificate:
            causes.append(required_because(f"{path}.clientCertificate", "MUTUAL TLS needs a client certificate"))
        if not tls.private_key:
            causes.append(required_because(f"{path}.privateKey", "MUTUAL TLS needs a private key"))
    return causes


def _tunnel_causes(path: str, tunnel: TunnelSettings | None) -> list[Cause]:
    if tunnel is None:
        return []
    causes = []
    if tunnel.protocol not in (None, "", "CONNECT", "POST"):
        causes.append(invalid(f"{path}.protocol", tunnel.protocol, 'must be "CONNECT" or "POST"'))
    if fqdn_error(tunnel.target_host) and not is_ip(tunnel.target_host):
        causes.append(invalid(f"{path}.targetHost", tunnel.target_host, "must be a fully qualified name or an IP"))
    if port_error(tunnel.target_port):
        causes.append(invalid(f"{path}.targetPort", tunnel.target_port, "port number must be in the range 1..65535"))
    return causes
