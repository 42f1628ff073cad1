"""One delta ADS stream kept up by a node proxy (ztunnel, waypoint): connect, stream, and on any
failure wait a back-off and reconnect, from 10 ms doubling to 15 s (istio/ztunnel:
src/xds/client.rs). Nothing is cleared while the stream is down: the proxy keeps serving what it
holds, and the next stream's DeltaClient takes over what the last one held, so the reconnect sends
`initial_resource_versions`."""

from __future__ import annotations

import asyncio
import logging
import ssl

from mesh.grpc_client import Channel, RpcError, open_channel

from .delta_client import DeltaClient

INITIAL_BACKOFF = 0.01  # seconds
MAX_BACKOFF = 15.0


def next_backoff(current: float) -> float:
    """The delay after `current`: doubling, capped at 15 s."""
    return min(max(current, INITIAL_BACKOFF) * 2, MAX_BACKOFF)


class AdsStream:
    """The reconnect loop of an xDS client. A subclass says how to connect (`_tls`) and
    what to subscribe (`_new_delta`), and counts each applied response in `_received` (a stream
    that received something restarts the back-off). Not thread-safe: the event loop owns it."""

    def __init__(self, address: str, log: logging.Logger) -> None:
        self._address = address
        self._log = log
        self._received = 0
        self.connected = False
        self.delta: DeltaClient | None = None

    async def _tls(self) -> ssl.SSLContext:
        raise NotImplementedError

    def _new_delta(self, channel: Channel) -> DeltaClient:
        raise NotImplementedError

    async def keep_streaming(self) -> None:
        """Forever: connect, stream, and on any failure wait the back-off and reconnect."""
        delay = INITIAL_BACKOFF
        while True:
            before = self._received
            await self._stream_once()
            if self._received > before:
                delay = INITIAL_BACKOFF  # the stream worked: start the back-off afresh
            self._log.info("xds: reconnecting", extra={"in_seconds": delay})
            await asyncio.sleep(delay)
            delay = next_backoff(delay)

    async def _stream_once(self) -> None:
        channel: Channel | None = None
        try:
            channel = open_channel(self._address, await self._tls())
            self.delta = self._new_delta(channel)
            self.connected = True
            await self.delta.run_once()
        except asyncio.CancelledError:
            raise
        except RpcError as e:
            self._log.warning("xds: stream ended", extra={"code": e.code, "details": e.details})
        except Exception as e:  # e.g. the token file vanished: keep serving, retry
            self._log.warning("xds: cannot stream", extra={"error": f"{type(e).__name__}: {e}"})
        finally:
            self.connected = False
            if channel is not None:
                channel.close()
