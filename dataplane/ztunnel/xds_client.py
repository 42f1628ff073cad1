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
import ssl
from collections.abc import Callable

from google.protobuf import any_pb2

from mesh.grpc_client import Channel, tls_context
from mesh.xds.ads_stream import AdsStream
from mesh.xds.delta_client import DeltaClient

from .settings import ZtunnelConfig
from .state import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, StateStore

log = logging.getLogger("ztunnel.xds")

TYPES = (ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL)


def node_id(node: str, node_ip: str) -> str:
    """ztunnel's Node.id: `ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local` (reference §1)."""
    return f"ztunnel~{node_ip}~ztunnel-{node}.istio-system~istio-system.svc.cluster.local"


class XdsClient(AdsStream):
    """Keeps one delta ADS stream to mesh-xds up (mesh/xds/ads_stream.py) and feeds the store.
    `on_update(type_url)` is called after each applied response (ztunnel prefetches certificates
    from it)."""

    def __init__(self, config: ZtunnelConfig, store: StateStore, on_update: Callable[[str], None]) -> None:
        super().__init__(config.xds_address, log)
        self._config = config
        self._store = store
        self._on_update = on_update
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

    def _new_delta(self, channel: Channel) -> DeltaClient:
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

    async def _tls(self) -> ssl.SSLContext:
        return tls_context(self._config.roots_pem())

    async def run(self) -> None:
        """Forever: connect, stream, and on any failure wait the back-off and reconnect."""
        ready_watch = asyncio.ensure_future(self._watch_ready())
        try:
            await self.keep_streaming()
        finally:
            ready_watch.cancel()

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
