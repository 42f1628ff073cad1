"""Shared fixtures: istiod on SQLite and on PostgreSQL, a Redis of the test's own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness

DATABASES = ["sqlite", "postgres"]


@pytest.fixture(scope="module", params=DATABASES)
def istiod(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Istiod]:
    """One istiod per test module and database, using the machine's Redis (or REDIS_URL)."""
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    harness.need(
        "redis",
        harness.port_open("127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0])),
        f"nothing answers at {redis_url}",
    )
    tmp = tmp_path_factory.mktemp(f"istiod-{request.param}")
    with harness.running_istiod(tmp, request.param, redis_url) as node:
        yield node


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[harness.RedisServer]:
    with harness.redis_server(tmp_path) as server:
        yield server
