"""mesh-xds's settings (flags and environment)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from mesh.settings import CommonSettings, Listen, OptionalListen


class XdsSettings(CommonSettings):
    """Everything mesh-xds reads at start-up."""

    listen: Listen = Field("127.0.0.1:15010", description="HOST:PORT of the gRPC (ADS) service")
    mtls_listen: OptionalListen = Field(
        "127.0.0.1:15013",
        description="HOST:PORT of the same ADS service requiring a workload certificate (mTLS: proxyless gRPC "
        "clients, waypoints); empty to disable",
    )
    admin_listen: OptionalListen = Field(
        "127.0.0.1:15011", description="HOST:PORT of plain-HTTP /debug/syncz and /metrics; empty to disable"
    )
    istiod: str | None = Field(None, description="istiod's URL (default: from {state-dir}/istiod.json)")
    istiod_ca_file: Path | None = Field(None, description="CA bundle for istiod's certificate (default: istiod.json)")
    token_file: Path | None = Field(None, description="token to read configuration with (default: reader-token)")
    secrets_token_file: Path | None = Field(
        None,
        description="token allowed to read the Secrets ingress gateways reference (default: {state-dir}/admin-token "
        "when it exists; without one, HTTPS listeners get no chain)",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("redis_url", "REDIS_URL", "MESH_REDIS_URL"),
        description="Redis holding the change stream",
    )
    change_stream: str = Field("mesh:changes", description="the change stream istiod publishes")
    consumer_group: str = Field("mesh-xds", description="consumer group this instance reads the stream with")
    debounce_quiet: float = Field(0.1, gt=0, description="seconds without changes before a push")
    debounce_max: float = Field(1.0, gt=0, description="longest a change waits for its push (seconds)")
    plaintext: bool = Field(False, description="serve gRPC without TLS (local debugging only; tokens still required)")
    cert_file: Path | None = Field(None, description="serving certificate chain (default: {state-dir}/xds-cert.pem)")
    key_file: Path | None = Field(None, description="serving key (default: {state-dir}/xds-key.pem)")
    roots_file: Path | None = Field(None, description="mesh trust bundle for client certificates (root-cert.pem)")
    trust_domain: str = Field("cluster.local", description="SPIFFE trust domain")
