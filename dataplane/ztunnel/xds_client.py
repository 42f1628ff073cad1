"""ztunnel's xDS client: delta ADS for Address and Authorization into the StateStore.

Reference §1: wildcard subscriptions to both types, the node token as bearer, TLS against the
mesh's roots; every response is applied to the store (good resources kept, bad ones NACKed by
name with "name: reason" joined by "; "); reconnect with back-off from 10 ms doubling to 15 s, and
on reconnect `initial_resource_versions` so only changes come back. While mesh-xds is away the
store keeps the last good state: nothing is cleared when the stream fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from google.protobuf import any_pb2

from mesh.xds.delta_client import DeltaClient

from .settings import ZtunnelConfig
from .state import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, StateStore

log = logging.getLogger("ztunnel.xds")

INITIAL_BACKOFF = 0.01  # seconds (istio/ztunnel: src/xds/client.rs)
MAX_BACKOFF = 15.0
TYPES = (ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL)


def node_id(node: str, node_ip: str) -> str:
    """ztunnel's Node.id: `ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local` (reference §1)."""
    return f"ztunnel~{node_ip}~ztunnel-{node}.istio-system~istio-system.svc.cluster.local"


def next_backoff(current: float) -> float:
    """The delay after `current`: doubling, capped at 15 s."""
    return min(max(current, INITIAL_BACKOFF) * 2, MAX_BACKOFF)


class XdsClient:
    """Keeps one delta ADS stream to mesh-xds up and feeds the store. `on_update(type_url)` is
    called after each applied response (ztunnel prefetches certificates from it)."""

    def __init__(self, config: ZtunnelConfig, store: StateStore, on_update: Callable[[str], None]) -> None:
        self._config = config
        self._store = store
        self._on_update = on_update
        self._received = 0
        self.connected = False
        self.delta: DeltaClient | None = None
        self.ready = asyncio.Event()  # set after the first answered response of both types

    def _apply(self, type_url: str, updated: dict[str, any_pb2.Any], removed: set[str]) -> list[str]:
        """The DeltaClient's applier: into the store; the refused names go back in the NACK."""
        self._received += 1
        rejections = self._store.apply(type_url, updated, removed)
        for rejection in rejections:
            log.warning("xds: resource refused", extra={"type": type_url, "resource": str(rejection)})
        try:
            self._on_update(type_url)
        except Exception:  # a consumer's bug must not break the stream
            log.exception("xds: update hook failed")
        return [str(r) for r in rejections]

    def _new_delta(self, channel: grpc.aio.Channel) -> DeltaClient:
        config = self._config
        delta = DeltaClient(
            channel,
            node_id(config.node, config.node_ip),
            token=config.token(),
            applier=self._apply,
            metadata={
                "NAME": f"ztunnel-{config.node}",
                "NAMESPACE": "istio-system",
                "INSTANCE_IPS": config.node_ip,
                "NODE_NAME": config.node,
            },
        )
        if self.delta is not None:  # keep what we hold: the reconnect sends initial_resource_versions
            delta.types = self.delta.types
        for type_url in TYPES:
            delta.watch(type_url)
        return delta

    async def run(self) -> None:
        """Forever: connect, stream, and on any failure wait the back-off and reconnect."""
        delay = INITIAL_BACKOFF
        ready_watch = asyncio.ensure_future(self._watch_ready())
        try:
            while True:
                before = self._received
                await self._stream_once()
                if self._received > before:
                    delay = INITIAL_BACKOFF  # the stream worked: start the back-off afresh
                log.info("xds: reconnecting", extra={"in_seconds": delay})
                await asyncio.sleep(delay)
                delay = next_backoff(delay)
        finally:
            ready_watch.cancel()

    async def _stream_once(self) -> None:
        config = self._config
        try:
            credentials = grpc.ssl_channel_credentials(config.roots_pem())
            async with grpc.aio.secure_channel(config.xds_address, credentials) as channel:
                self.delta = self._new_delta(channel)
                self.connected = True
                await self.delta.run_once()
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as e:
            log.warning("xds: stream ended", extra={"code": e.code().name, "details": e.details()})
        except Exception as e:  # e.g. the token file vanished: keep serving, retry
            log.warning("xds: cannot stream", extra={"error": f"{type(e).__name__}: {e}"})
        finally:
            self.connected = False

    async def _watch_ready(self) -> None:
        while not self.answered_all():
            await asyncio.sleep(0.02)
        self.ready.set()

    def answered_all(self) -> bool:
        """Whether both types have had a response answered (ACK, or NACK naming what was refused
        while the rest was applied)."""
        delta = self.delta
        if delta is None:
            return False
        return all((s := delta.types.get(t)) is not None and s.acked + s.nacked > 0 for t in TYPES)

    def status(self) -> dict[str, dict[str, object]]:
        """Per type: resources held, ACKs and NACKs sent (for config_dump)."""
        delta = self.delta
        if delta is None:
            return {}
        return {
            t: {"resources": len(s.resources), "acked": s.acked, "nacked": s.nacked} for t, s in delta.types.items()
        }
