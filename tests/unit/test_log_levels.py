"""Log levels changed while a proxy runs: `mesh.logs.LogLevels` and the admin port's `/logging`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from mesh.admin_http import admin_routes, serve
from mesh.logs import LogLevels

TOUCHED = ("", "ztunnel.access", "ztunnel.inbound", "mesh.hbone")


@pytest.fixture(autouse=True)
def _levels_restored() -> Iterator[None]:
    saved = {name: logging.getLogger(name or None).level for name in TOUCHED}
    logging.getLogger().setLevel(logging.INFO)
    yield
    for name, level in saved.items():
        logging.getLogger(name or None).setLevel(level)


def test_a_spec_names_the_default_and_targets_in_istioctls_or_ztunnels_syntax() -> None:
    levels = LogLevels("ztunnel")
    assert levels.parse("debug") == {"": logging.DEBUG}
    assert levels.parse("warn, access:debug,mesh.hbone=error") == {
        "": logging.WARNING,
        "ztunnel.access": logging.DEBUG,
        "mesh.hbone": logging.ERROR,
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("loud", "unknown level 'loud'"),
        ("access:loud", "unknown level 'loud' in 'access:loud'"),
        (":debug", "no target before the level"),
    ],
)
def test_a_bad_spec_says_why_and_changes_nothing(spec: str, message: str) -> None:
    levels = LogLevels("ztunnel")
    with pytest.raises(ValueError, match=message):
        levels.set(f"debug,inbound:error,{spec}")
    assert logging.getLogger().level == logging.INFO
    assert logging.getLogger("ztunnel.inbound").level == logging.NOTSET


def test_an_empty_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="no level given"):
        LogLevels("ztunnel").set(" , ")


def test_set_describe_and_reset() -> None:
    levels = LogLevels("ztunnel")
    levels.set("warn,access:debug")
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("ztunnel.access").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("ztunnel.inbound").getEffectiveLevel() == logging.WARNING  # follows the default
    assert levels.describe() == "current log level is warn,access=debug"
    levels.reset()
    assert logging.getLogger().level == logging.INFO  # what the process started with
    assert logging.getLogger("ztunnel.access").level == logging.NOTSET
    assert levels.describe() == "current log level is info"


async def _call(port: int, method: str, target: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode().strip()


async def test_the_admin_port_shows_and_changes_the_levels() -> None:
    server = await serve("127.0.0.1", 0, admin_routes("ztunnel", dict, lambda: None))
    port = server.sockets[0].getsockname()[1]
    access = logging.getLogger("ztunnel.access")
    try:
        assert await _call(port, "GET", "/logging") == (200, "current log level is info")
        assert await _call(port, "POST", "/logging?level=access:off") == (200, "current log level is info,access=off")
        assert not access.isEnabledFor(logging.CRITICAL)
        status, body = await _call(port, "GET", "/logging?level=debug")  # a change needs POST
        assert status == 405 and logging.getLogger().level == logging.INFO
        status, body = await _call(port, "POST", "/logging?level=chatty")
        assert status == 400 and "unknown level 'chatty'" in body and "nothing changed" in body
        assert await _call(port, "POST", "/logging?reset") == (200, "current log level is info")
        assert access.isEnabledFor(logging.INFO)
    finally:
        server.close()
        await server.wait_closed()
