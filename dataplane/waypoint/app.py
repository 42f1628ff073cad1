"""The waypoint's wiring: identity, xDS into the config store, the live upstream clusters and
their outlier timer, the HBONE server and the request pipeline, telemetry, the
admin/metrics/readiness ports; readiness and drain.

Shutdown (SIGTERM, SIGINT or POST /quitquitquit): stop xDS, close 15008 (no new streams; open
ones finish until `--drain-seconds`), then cut what is left.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from mesh import admin_http
from mesh.hbone import HboneServer
from mesh.readiness import Readiness

from .admin import AdminSources, admin_routes, metrics_routes, readiness_routes
from .config import ConfigStore
from .identity import WaypointIdentity
from .proxy.clusters import UpstreamClusters
from .proxy.pipeline import Pipeline
from .proxy.server import Inbound
from .proxy.upstream import Upstreams
from .settings import WaypointConfig
from .telemetry import Metrics
from .xds_client import XdsClient

log = logging.getLogger("waypoint")


class Waypoint:
    """The waypoint process: `await Waypoint(config).run()` until asked to stop."""

    def __init__(self, config: WaypointConfig) -> None:
        self.config = config
        self.store = ConfigStore()
        self.metrics = Metrics()
        self.identity = WaypointIdentity(config)
        self.readiness = Readiness()
        self.xds = XdsClient(config, self.identity, self.store, lambda: None)
        self.upstreams = Upstreams(self.identity, config.hbone_upstream_port)
        self.clusters = UpstreamClusters(self.store)
        self.pipeline = Pipeline(self.store, self.clusters, self.upstreams, self.metrics, config.cluster_id)
        self.inbound = Inbound(self.store, self.pipeline)
        self.hbone = HboneServer(self.identity.server_context, self.inbound.handle, trust_domain=config.trust_domain)
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        """Begin the drain (idempotent)."""
        self.stopping.set()

    async def _serve_endpoints(self) -> list[asyncio.Server]:
        config = self.config
        sources = AdminSources(
            config,
            self.store,
            self.identity,
            self.xds,
            self.readiness,
            self.metrics,
            self.clusters,
            self.stop,
        )
        host = config.listen_address
        return [
            await admin_http.serve(host, config.admin_port, admin_routes(sources)),
            await admin_http.serve(host, config.metrics_port, metrics_routes(self.metrics)),
            await admin_http.serve(host, config.readiness_port, readiness_routes(self.readiness)),
        ]

    async def _start_hbone(self) -> None:
        """Serve 15008 once a certificate is at hand (before that a handshake could not work)."""
        await self.identity.wait_ready()
        self.readiness.mark_ready("certificate")
        await self.hbone.listen(self.config.listen_address, self.config.hbone_port)
        log.info("hbone listening", extra={"address": f"{self.config.listen_address}:{self.config.hbone_port}"})

    async def _mark_xds_ready(self) -> None:
        await self.xds.ready.wait()
        self.readiness.mark_ready("xds")
        log.info("config received", extra={"gateway": self.config.gateway})

    async def run(self) -> None:
        """Start everything, serve until asked to stop, then drain."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        self.readiness.register("certificate")
        self.readiness.register("xds")
        self.identity.start()
        servers = await self._serve_endpoints()
        tasks = [
            asyncio.ensure_future(self._start_hbone()),
            asyncio.ensure_future(self.xds.run()),
            asyncio.ensure_future(self._mark_xds_ready()),
            asyncio.ensure_future(self.clusters.run_outlier_timer()),
        ]
        log.info("started", extra={"gateway": self.config.gateway, "identity": str(self.config.identity)})
        try:
            await self.stopping.wait()
        finally:
            await self._drain(tasks, servers)

    async def _drain(self, tasks: list[asyncio.Task[None]], servers: list[asyncio.Server]) -> None:
        log.info(
            "draining", extra={"active_streams": self.inbound.active, "deadline_seconds": self.config.drain_seconds}
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.hbone.close(self.config.drain_seconds)
        self.upstreams.close()
        for server in servers:
            server.close()
        await self.identity.aclose()
        log.info("stopped")


async def run(config: WaypointConfig) -> None:
    """The process's main coroutine."""
    await Waypoint(config).run()
