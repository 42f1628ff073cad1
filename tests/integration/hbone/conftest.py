"""Every HBONE integration test runs on both event loops the data plane may use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """asyncio's own loop and uvloop (the data plane's default: Lessons 3)."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
