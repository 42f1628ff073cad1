"""ztunnel's settings: flags and `MESH_*` variables over what the node directory's node.json says.

`meshctl cluster up` starts ztunnel inside the node's netns with `--state-dir {cluster}/nodes/
node-{i}`; node.json there names the node, its underlay IP, mesh-ca's and mesh-xds's addresses and
the trust bundle (docs/cluster.md). Every value can be overridden by a flag. `resolve()` turns the
settings into a `ZtunnelConfig` once, with errors of the form `NAME=VALUE (reason)` (STYLE).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from mesh.identity import DEFAULT_TRUST_DOMAIN
from mesh.names import CLUSTER_DOMAIN
from mesh.plain_settings import PlainSettings, host_port, setting

ADMIN_PORT = 15000
METRICS_PORT = 15020
READINESS_PORT = 15021


class ConfigError(ValueError):
    """A setting that cannot be used; the message is `NAME=VALUE (reason)`."""


@dataclass
class ZtunnelSettings(PlainSettings):
    """What `ztunnel` reads at start-up. `state_dir` is the node's directory. A plain dataclass
    (mesh/plain_settings.py): pydantic would cost ztunnel 12 MB of resident memory."""

    node: str = setting("", "this node's name (default: `name` in {state-dir}/node.json)")
    node_ip: str = setting("", "the node's underlay IP for metrics and readiness (default: node.json `ip`)")
    xds_address: str = setting("", "mesh-xds HOST:PORT (default: node.json `xds`)")
    ca_address: str = setting("", "mesh-ca HOST:PORT (default: node.json `ca`)")
    token_file: Path | None = setting(None, "the node token (default: {state-dir}/token)")
    root_cert: Path | None = setting(None, "the mesh's trust bundle (default: node.json `root_cert`)")
    zds_socket: Path | None = setting(None, "the node agent's ZDS socket (default: {state-dir}/ztunnel/zds.sock)")
    admin_address: str = setting(
        "127.0.0.1", "where the admin port listens (loopback of the node: pods must not reach it)"
    )
    admin_port: int = setting(ADMIN_PORT, "/config_dump, /quitquitquit", ge=0, le=65535)
    dns_address: str = setting(
        "auto",
        "the node's name server, IP or IP:PORT (auto: the pods' gateway, node.json pod_cidr, port 53; off: none)",
    )
    dns_domain: str = setting(CLUSTER_DOMAIN, "the cluster's DNS domain")
    metrics_port: int = setting(METRICS_PORT, "/stats/prometheus, /metrics", ge=0, le=65535)
    readiness_port: int = setting(READINESS_PORT, "/healthz/ready", ge=0, le=65535)
    trust_domain: str = setting(DEFAULT_TRUST_DOMAIN, "the mesh's trust domain")
    cert_ttl: int = setting(86400, "certificate lifetime to request, seconds (mesh-ca clamps it)", ge=60)
    drain_seconds: float = setting(5.0, "on SIGTERM, how long open connections may finish", ge=0)
    cluster_id: str = setting("Kubernetes", "the cluster name in telemetry and baggage")
    request_certificate: str = setting(
        "", "diagnostic: ask the CA for this SPIFFE identity as this node's ztunnel would, print, exit"
    )


@dataclass(frozen=True)
class ZtunnelConfig:
    """The resolved configuration every part of ztunnel is handed (explicit wiring)."""

    node: str
    node_ip: str
    xds_address: str
    ca_address: str
    token_file: Path
    root_cert: Path
    zds_socket: Path
    admin_address: str
    admin_port: int
    dns: tuple[str, int] | None  # where the node's name server answers, or None
    dns_domain: str
    metrics_port: int
    readiness_port: int
    trust_domain: str
    cert_ttl: timedelta
    drain_seconds: float
    cluster_id: str

    def token(self) -> str:
        """The node token, read at each use (a rotated token is picked up on reconnect)."""
        return self.token_file.read_text().strip()

    def roots_pem(self) -> bytes:
        """The trust bundle, read at each use (a new root joins the bundle file)."""
        return self.root_cert.read_bytes()


def _node_info(state_dir: Path) -> dict:
    path = state_dir / "node.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"MESH_STATE_DIR={state_dir} (node.json unreadable: {e})") from None


def _required(name: str, value: str | Path | None, hint: str) -> str:
    if not value:
        raise ConfigError(f"MESH_{name.upper()}= (missing: {hint})")
    return str(value)


def _dns_address(value: str, pod_cidr: str | None) -> tuple[str, int] | None:
    """`auto`: the first address of the node's pod range (the gateway every pod's resolv.conf
    names, docs/runtime.md), port 53; `off`: no name server; else IP or IP:PORT."""
    if value == "off" or (value == "auto" and not pod_cidr):
        return None
    try:
        if value == "auto":
            return str(next(ipaddress.ip_network(pod_cidr, strict=False).hosts())), 53
        host, _, port = value.partition(":")
        return str(ipaddress.ip_address(host)), int(port) if port else 53
    except (ValueError, StopIteration):
        where = f"MESH_DNS_ADDRESS={value}" + (f" (node.json pod_cidr {pod_cidr})" if value == "auto" else "")
        raise ConfigError(f"{where} (expected auto, off, IP or IP:PORT)") from None


def resolve(settings: ZtunnelSettings) -> ZtunnelConfig:
    """Fill what flags left empty from node.json and check it; ConfigError says what is wrong."""
    info = _node_info(settings.state_dir)
    where = "pass the flag or write it into {state-dir}/node.json"
    xds = _required("xds_address", settings.xds_address or info.get("xds"), where)
    ca = _required("ca_address", settings.ca_address or info.get("ca"), where)
    for name, value in (("xds_address", xds), ("ca_address", ca)):
        try:
            host_port(value)
        except ValueError as e:
            raise ConfigError(f"MESH_{name.upper()}={value} ({e})") from None
    try:
        ipaddress.ip_address(settings.admin_address)
    except ValueError:
        raise ConfigError(f"MESH_ADMIN_ADDRESS={settings.admin_address} (not an IP address)") from None
    token_file = settings.token_file or settings.state_dir / "token"
    root_cert = Path(_required("root_cert", settings.root_cert or info.get("root_cert"), where))
    for name, path in (("token_file", token_file), ("root_cert", root_cert)):
        if not path.exists():
            raise ConfigError(f"MESH_{name.upper()}={path} (no such file)")
    return ZtunnelConfig(
        node=_required("node", settings.node or info.get("name"), where),
        node_ip=_required("node_ip", settings.node_ip or info.get("ip"), where),
        xds_address=xds,
        ca_address=ca,
        token_file=token_file,
        root_cert=root_cert,
        zds_socket=settings.zds_socket or settings.state_dir / "ztunnel" / "zds.sock",
        admin_address=settings.admin_address,
        admin_port=settings.admin_port,
        dns=_dns_address(settings.dns_address, info.get("pod_cidr")),
        dns_domain=settings.dns_domain.strip(".").lower(),
        metrics_port=settings.metrics_port,
        readiness_port=settings.readiness_port,
        trust_domain=settings.trust_domain,
        cert_ttl=timedelta(seconds=settings.cert_ttl),
        drain_seconds=settings.drain_seconds,
        cluster_id=settings.cluster_id,
    )
