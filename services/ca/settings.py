"""mesh-ca's settings (flags and environment)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from mesh.settings import CommonSettings, Listen, OptionalListen


class CaSettings(CommonSettings):
    """Everything mesh-ca reads at start-up."""

    listen: Listen = Field("127.0.0.1:15012", description="HOST:PORT of the gRPC service")
    metrics_listen: OptionalListen = Field(
        "127.0.0.1:15016", description="HOST:PORT of plain-HTTP /metrics; empty to disable"
    )
    istiod: str | None = Field(None, description="istiod's URL (default: from {state-dir}/istiod.json)")
    istiod_ca_file: Path | None = Field(
        None, description="CA bundle for istiod's certificate (default: from istiod.json)"
    )
    token_file: Path | None = Field(
        None, description="token to read pods and nodes with (default: {state-dir}/reader-token)"
    )
    trust_domain: str = Field("cluster.local", description="SPIFFE trust domain")
    cacerts: Path | None = Field(
        None, description="plug-in CA directory (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)"
    )
    plaintext: bool = Field(False, description="serve gRPC without TLS (local debugging only)")
    tls_san: list[str] = Field(default_factory=list, description="extra names or IPs for the serving certificate")
    xds_san: list[str] = Field(
        default_factory=list, description="extra names or IPs for mesh-xds's serving certificate"
    )
    default_cert_ttl: int = Field(24 * 3600, ge=600, description="lifetime when a request asks for none (seconds)")
    max_cert_ttl: int = Field(24 * 3600, ge=600, description="longest lifetime issued (seconds)")
    min_cert_ttl: int = Field(600, ge=60, description="shortest lifetime issued (seconds)")
    keystore_reload: float = Field(10.0, gt=0, description="seconds between checks for root rotations")
