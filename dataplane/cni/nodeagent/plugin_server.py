"""The unix stream socket the istio-cni plugin talks to (protocol in dataplane/cni/events.py).

One request per connection: read until the plugin shuts down its write side, answer, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..events import MAX_MESSAGE, AgentReply, EventError, PluginEvent

log = logging.getLogger("mesh.cni.plugin-server")
READ_TIMEOUT = 5.0
Handler = Callable[[PluginEvent], Awaitable[AgentReply]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while len(data) <= MAX_MESSAGE:
        chunk = await reader.read(MAX_MESSAGE + 1 - len(data))
        if not chunk:
            return data
        data += chunk
    raise EventError(f"request larger than {MAX_MESSAGE} bytes")


class PluginServer:
    """Serves plugin events to `handler` on `path`."""

    def __init__(self, path: Path, handler: Handler):
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)
        log.info("plugin socket listening", extra={"socket": str(self.path)})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                event = PluginEvent.from_json(await asyncio.wait_for(_read_request(reader), READ_TIMEOUT))
            except (EventError, TimeoutError) as e:
                reply = AgentReply(ok=False, error=str(e) or "timed out reading the request")
            else:
                reply = await self._answer(event)
            writer.write(reply.to_json())
            await writer.drain()
        except OSError as e:
            log.debug("plugin connection failed: %s", e)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, event: PluginEvent) -> AgentReply:
        try:
            return await self.handler(event)
        except Exception as e:
            log.exception("plugin event %s for %s/%s failed", event.event, event.pod_namespace, event.pod_name)
            return AgentReply(ok=False, error=f"{type(e).__name__}: {e}")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
