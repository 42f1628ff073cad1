"""istiod's settings (flags and environment)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator

from mesh.settings import CommonSettings, Listen, OptionalListen


class IstiodSettings(CommonSettings):
    """Everything istiod reads at start-up."""

    listen: Listen = Field("127.0.0.1:6443", description="HOST:PORT of the API")
    metrics_listen: OptionalListen = Field(
        "127.0.0.1:15014", description="HOST:PORT of the plain-HTTP /metrics endpoint; empty to disable"
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("database_url", "DATABASE_URL", "MESH_DATABASE_URL"),
        description="SQLAlchemy URL; default: a SQLite file in the state directory",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("redis_url", "REDIS_URL", "MESH_REDIS_URL"),
        description="Redis for the change stream",
    )
    change_stream: str = Field("mesh:changes", description="Redis stream that carries every change")
    insecure_http: bool = Field(False, description="serve plain HTTP instead of TLS (local debugging only)")
    tls_san: list[str] = Field(default_factory=list, description="extra DNS names or IPs for the serving certificate")
    token_auth_file: Path | None = Field(None, description='static tokens: token,user,uid,"groups"')
    service_cidr: str = Field("198.19.0.0/17", description="range Service cluster IPs are allocated from")
    node_token_ttl: int = Field(365 * 24 * 3600, ge=600, description="lifetime in seconds of node tokens")
    watch_history: int = Field(50_000, ge=100, description="revisions kept for resuming watches")
    bookmark_interval: float = Field(30.0, gt=0, description="seconds between watch bookmarks")

    @field_validator("service_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        net = ipaddress.ip_network(value)
        if net.num_addresses < 16:
            raise ValueError("the service range needs at least 16 addresses")
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'istiod.db'}"

    @property
    def scheme(self) -> str:
        return "http" if self.insecure_http else "https"
