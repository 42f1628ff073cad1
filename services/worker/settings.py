"""mesh-worker's settings (flags and environment)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from mesh.settings import CommonSettings


class WorkerSettings(CommonSettings):
    istiod: str | None = Field(None, description="istiod's URL (default: from {state-dir}/istiod.json)")
    istiod_ca_file: Path | None = Field(None, description="CA bundle for istiod's certificate (default: istiod.json)")
    token_file: Path | None = Field(None, description="token that may write status (default: {state-dir}/admin-token)")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("redis_url", "REDIS_URL", "MESH_REDIS_URL"),
        description="Redis: the jobs' broker",
    )
    queue: str = Field("mesh", description="the queue to take jobs from")
