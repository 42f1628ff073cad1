"""The waypoint's settings: flags over the environment mesh-runtime gives every container
(docs/waypoint.md, "Identity (contract)").

`resolve()` turns them into one frozen `WaypointConfig`, with errors of the form
`NAME=VALUE (reason)` (STYLE), so a missing or bad setting ends the process with one clear line.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field

from mesh.identity import DEFAULT_TRUST_DOMAIN, Identity, IdentityError
from mesh.settings import CommonSettings, host_port

HBONE_PORT = 15008
ADMIN_PORT = 15000
METRICS_PORT = 15020
READINESS_PORT = 15021
MODES = ("waypoint", "ingress")


class ConfigError(ValueError):
    """A setting that cannot be used; the message is `NAME=VALUE (reason)`."""


class WaypointSettings(CommonSettings):
    """What `waypoint` reads at start-up; each field is a flag and a `MESH_*` variable, which for
    the pod's facts are exactly the contract's names (`MESH_POD_NAME`, `MESH_TOKEN_FILE`, ...)."""

    gateway: str = Field("", description="the Gateway this proxy serves, NAMESPACE/NAME")
    mode: str = Field(
        "waypoint", description="waypoint (HBONE on 15008) or ingress (the Gateway's listeners, docs/ingress.md)"
    )
    pod_name: str = Field("", description="this pod's name")
    pod_namespace: str = Field("", description="this pod's namespace")
    pod_ip: str = Field("", description="this pod's IP")
    service_account: str = Field("", description="this pod's service account")
    token_file: Path | None = Field(None, description="the service-account token (bearer for mesh-ca)")
    root_cert: Path | None = Field(None, description="the trust bundle")
    ca_address: str = Field("", description="mesh-ca HOST:PORT")
    xds_address: str = Field("", description="mesh-xds mTLS HOST:PORT")
    listen_address: str = Field("0.0.0.0", description="the address every port but the admin port listens on")
    admin_address: str = Field(
        "127.0.0.1", description="where the admin port listens (the pod's loopback: other pods must not reach it)"
    )
    hbone_port: int = Field(HBONE_PORT, ge=0, le=65535, description="HBONE (mTLS, HTTP/2 CONNECT)")
    admin_port: int = Field(ADMIN_PORT, ge=0, le=65535, description="/config_dump, /quitquitquit")
    metrics_port: int = Field(METRICS_PORT, ge=0, le=65535, description="/stats/prometheus")
    readiness_port: int = Field(READINESS_PORT, ge=0, le=65535, description="/healthz/ready")
    hbone_upstream_port: int = Field(
        HBONE_PORT, ge=1, le=65535, description="the endpoints' HBONE port (tests on loopback change it)"
    )
    trust_domain: str = Field(DEFAULT_TRUST_DOMAIN, description="the mesh's trust domain")
    cluster_id: str = Field("Kubernetes", description="the cluster name in telemetry")
    cert_ttl: int = Field(86400, ge=60, description="certificate lifetime to request, seconds (mesh-ca clamps it)")
    drain_seconds: float = Field(5.0, ge=0, description="on SIGTERM, how long open connections may finish")
    otlp_endpoint: str = Field(
        "", description="OTLP/HTTP traces URL (http://collector:4318/v1/traces): one span per request; empty: none"
    )


@dataclass(frozen=True)
class WaypointConfig:
    """The resolved configuration every part of the waypoint is handed (explicit wiring)."""

    gateway_namespace: str
    gateway_name: str
    pod_name: str
    pod_namespace: str
    pod_ip: str
    identity: Identity
    token_file: Path
    root_cert: Path
    ca_address: str
    xds_address: str
    listen_address: str
    admin_address: str
    hbone_port: int
    admin_port: int
    metrics_port: int
    readiness_port: int
    hbone_upstream_port: int
    trust_domain: str
    cluster_id: str
    cert_ttl: timedelta
    drain_seconds: float
    mode: str = "waypoint"  # or "ingress"
    otlp_endpoint: str = ""  # the OTLP/HTTP traces URL; empty: no tracing (tracing.py)

    @property
    def gateway(self) -> str:
        """`N/G`, as the node metadata and the Listener name carry it."""
        return f"{self.gateway_namespace}/{self.gateway_name}"

    @property
    def ingress(self) -> bool:
        """Whether this is an ingress gateway (`--mode ingress`) rather than a waypoint."""
        return self.mode == "ingress"

    def token(self) -> str:
        """The service-account token, read at each use (mesh-runtime refreshes the file)."""
        return self.token_file.read_text().strip()

    def roots_pem(self) -> bytes:
        """The trust bundle, read at each use."""
        return self.root_cert.read_bytes()


def _required(env: str, value: object) -> str:
    if not value:
        raise ConfigError(f"{env}= (missing: set the variable or pass the flag)")
    return str(value)


def _address(env: str, value: str) -> str:
    try:
        host_port(value)
    except ValueError as e:
        raise ConfigError(f"{env}={value} ({e})") from None
    return value


def _gateway(value: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not value:
        raise ConfigError("MESH_GATEWAY= (missing: pass --gateway NAMESPACE/NAME)")
    if not sep or not namespace or not name or "/" in name:
        raise ConfigError(f"MESH_GATEWAY={value} (expected NAMESPACE/NAME)")
    return namespace, name


def resolve(settings: WaypointSettings) -> WaypointConfig:
    """Check the settings and fill what follows from them; ConfigError says what is wrong."""
    if settings.mode not in MODES:
        raise ConfigError(f"MESH_MODE={settings.mode} (expected one of: {', '.join(MODES)})")
    gw_namespace, gw_name = _gateway(settings.gateway)
    namespace = settings.pod_namespace or gw_namespace
    pod_ip = _required("MESH_POD_IP", settings.pod_ip)
    try:
        ipaddress.ip_address(pod_ip)
    except ValueError:
        raise ConfigError(f"MESH_POD_IP={pod_ip} (not an IP address)") from None
    try:
        identity = Identity(
            settings.trust_domain, namespace, _required("MESH_SERVICE_ACCOUNT", settings.service_account)
        )
    except IdentityError as e:
        raise ConfigError(f"MESH_SERVICE_ACCOUNT={settings.service_account} ({e})") from None
    files = {}
    for env, path in (("MESH_TOKEN_FILE", settings.token_file), ("MESH_ROOT_CERT", settings.root_cert)):
        if path is None:
            raise ConfigError(f"{env}= (missing: set the variable or pass the flag)")
        if not path.is_file():
            raise ConfigError(f"{env}={path} (no such file)")
        files[env] = path
    for env, address in (
        ("MESH_LISTEN_ADDRESS", settings.listen_address),
        ("MESH_ADMIN_ADDRESS", settings.admin_address),
    ):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"{env}={address} (not an IP address)") from None
    return WaypointConfig(
        gateway_namespace=gw_namespace,
        gateway_name=gw_name,
        pod_name=_required("MESH_POD_NAME", settings.pod_name),
        pod_namespace=namespace,
        pod_ip=pod_ip,
        identity=identity,
        token_file=files["MESH_TOKEN_FILE"],
        root_cert=files["MESH_ROOT_CERT"],
        ca_address=_address("MESH_CA_ADDRESS", _required("MESH_CA_ADDRESS", settings.ca_address)),
        xds_address=_address("MESH_XDS_ADDRESS", _required("MESH_XDS_ADDRESS", settings.xds_address)),
        listen_address=settings.listen_address,
        admin_address=settings.admin_address,
        hbone_port=settings.hbone_port,
        admin_port=settings.admin_port,
        metrics_port=settings.metrics_port,
        readiness_port=settings.readiness_port,
        hbone_upstream_port=settings.hbone_upstream_port,
        trust_domain=settings.trust_domain,
        cluster_id=settings.cluster_id,
        cert_ttl=timedelta(seconds=settings.cert_ttl),
        drain_seconds=settings.drain_seconds,
        mode=settings.mode,
        otlp_endpoint=_otlp_endpoint(settings.otlp_endpoint),
    )


def _otlp_endpoint(value: str) -> str:
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"MESH_OTLP_ENDPOINT={value} (expected an http:// or https:// URL)")
    return value
