"""The waypoint's xDS client: one delta ADS stream to mesh-xds's mTLS port, subscribing by name.

docs/waypoint.md, "Configuration from mesh-xds (contract)": node id
`waypoint~{pod IP}~{pod}.{ns}~{ns}.svc.cluster.local`, metadata NAMESPACE, NAME, WAYPOINT; first the
Listener `waypoint/N/G`, then the RouteConfigurations and Clusters it (and its routes) name, then
the ClusterLoadAssignments of the EDS clusters. In ingress mode (docs/ingress.md, "Data path
(contract)") the node id starts with `router~`, the metadata adds `MODE: ingress`, the Listener is
`gateway/N/G`, and the SDS Secrets its TLS chains name are followed too. After each applied response the subscriptions
follow what is held (`ConfigStore.wanted`). A refused resource is NACKed by name and its previous
version kept; on disconnect nothing is cleared and the client reconnects with back-off (10 ms
doubling to 15 s, as ztunnel), presenting its current certificate each time.
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

from .config import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE, ConfigStore
from .identity import WaypointIdentity
from .settings import WaypointConfig

log = logging.getLogger("waypoint.xds")

_ORDER = (ROUTE_TYPE, SECRET_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)


def node_id(config: WaypointConfig) -> str:
    """The contract's node id: `waypoint~{pod IP}~{pod}.{ns}~{ns}.svc.cluster.local`, with
    `router~` (Istio's node type for gateways) in ingress mode."""
    ns = config.pod_namespace
    kind = "router" if config.ingress else "waypoint"
    return f"{kind}~{config.pod_ip}~{config.pod_name}.{ns}~{ns}.svc.cluster.local"


def listener_name(config: WaypointConfig) -> str:
    """`waypoint/N/G`, or `gateway/N/G` in ingress mode."""
    kind = "gateway" if config.ingress else "waypoint"
    return f"{kind}/{config.gateway_namespace}/{config.gateway_name}"


def node_metadata(config: WaypointConfig) -> dict[str, str]:
    """NAMESPACE, NAME, WAYPOINT (`N/G`), and `MODE: ingress` for a gateway."""
    metadata = {"NAMESPACE": config.pod_namespace, "NAME": config.pod_name, "WAYPOINT": config.gateway}
    if config.ingress:
        metadata["MODE"] = "ingress"
    return metadata


class XdsClient(AdsStream):
    """Keeps the ADS stream up (mesh/xds/ads_stream.py) and feeds the store; `on_update()` runs
    after each applied response (the proxy rebuilds its cluster states from it)."""

    def __init__(
        self, config: WaypointConfig, identity: WaypointIdentity, store: ConfigStore, on_update: Callable[[], None]
    ) -> None:
        super().__init__(config.xds_address, log)
        self._config = config
        self._identity = identity
        self._store = store
        self._on_update = on_update
        self.ready = asyncio.Event()  # the Listener and every route config and Secret it names arrived
        self.rejections: list[str] = []  # the last NACK's reasons, for config_dump

    def _apply(self, type_url: str, updated: dict[str, any_pb2.Any], removed: set[str]) -> list[str]:
        self._received += 1
        rejections = self._store.apply(type_url, updated, removed)
        for rejection in rejections:
            log.warning("xds: resource refused", extra={"type": type_url, "resource": rejection})
        if rejections:
            self.rejections = rejections
        self._follow_subscriptions()
        if self._store.complete:
            self.ready.set()
        try:
            self._on_update()
        except Exception:  # a consumer's bug must not break the stream
            log.exception("xds: update hook failed")
        return rejections

    def _follow_subscriptions(self) -> None:
        """Subscribe to newly named resources, unsubscribe from those no longer named."""
        delta = self.delta
        if delta is None:
            return
        wanted = self._store.wanted()
        for type_url in _ORDER:
            held = delta.types[type_url].subscribed if type_url in delta.types else set()
            new, gone = sorted(wanted[type_url] - held), sorted(held - wanted[type_url])
            if new:
                delta.wildcard[type_url] = False
                delta.subscribe(type_url, new)
            if gone:
                delta.unsubscribe(type_url, gone)
                self._store.apply(type_url, {}, gone)

    async def _tls(self) -> ssl.SSLContext:
        cert = await self._identity.current()
        return tls_context(self._identity.roots_pem(), "".join(cert.chain).encode(), cert.key_pem)

    def _new_delta(self, channel: Channel) -> DeltaClient:
        config = self._config
        delta = DeltaClient(
            channel,
            node_id(config),
            applier=self._apply,
            metadata=node_metadata(config),
        )
        if self.delta is not None:  # keep what we hold: the reconnect sends initial_resource_versions
            delta.types = self.delta.types
            delta.wildcard = self.delta.wildcard
        else:
            delta.watch(LISTENER_TYPE, wildcard=False, names=[listener_name(config)])
        return delta

    async def run(self) -> None:
        """Forever: connect, stream, and on any failure wait the back-off and reconnect."""
        await self.keep_streaming()

    def status(self) -> dict[str, object]:
        """Per type: resources held, subscribed names, ACKs and NACKs (for config_dump)."""
        delta = self.delta
        types = {}
        if delta is not None:
            types = {
                t: {
                    "resources": len(s.resources),
                    "subscribed": sorted(s.subscribed),
                    "acked": s.acked,
                    "nacked": s.nacked,
                }
                for t, s in delta.types.items()
            }
        return {"connected": self.connected, "types": types, "lastRejections": self.rejections}
