"""The waypoint's wiring: identity, xDS into the config store, the live upstream clusters and
their outlier timer, the HBONE server (waypoint mode) or the Gateway's listeners (ingress mode)
and the request pipeline, telemetry, the admin/metrics/readiness ports; readiness and drain.

Shutdown (SIGTERM, SIGINT or POST /quitquitquit): stop xDS, close 15008 or the ingress
listeners (no new streams or connections; open ones finish until `--drain-seconds`), then cut
what is left.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from mesh import admin_http
from mesh.hbone import HboneServer
from mesh.readiness import Readiness

from .admin import AdminSources, admin_routes, metrics_routes, readiness_routes
from .config import ConfigStore
from .identity import WaypointIdentity
from .ingress.listeners import IngressListeners
from .proxy.clusters import UpstreamClusters
from .proxy.pipeline import Pipeline
from .proxy.server import Inbound
from .proxy.upstream import Upstreams
from .settings import WaypointConfig
from .telemetry import ACCESS_LOG, Metrics, Reporting, Source
from .xds_client import XdsClient

if TYPE_CHECKING:
    from .tracing import Tracer

log = logging.getLogger("waypoint")


class Waypoint:
    """The waypoint process: `await Waypoint(config).run()` until asked to stop."""

    def __init__(self, config: WaypointConfig) -> None:
        self.config = config
        self.store = ConfigStore()
        self.metrics = Metrics()
        self.identity = WaypointIdentity(config)
        self.readiness = Readiness()
        self.xds = XdsClient(config, self.identity, self.store, self._config_changed)
        self.upstreams = Upstreams(self.identity, config.hbone_upstream_port)
        self.clusters = UpstreamClusters(self.store)
        self.tracer = _tracer(config)
        self.pipeline = Pipeline(
            self.store, self.clusters, self.upstreams, self.metrics, config.cluster_id, _reporting(config), self.tracer
        )
        self.inbound = Inbound(self.store, self.pipeline)
        self.ingress = IngressListeners(self.store, self.pipeline, config.listen_address) if config.ingress else None
        self.hbone = HboneServer(self.identity.server_context, self.inbound.handle, trust_domain=config.trust_domain)
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        """Begin the drain (idempotent)."""
        self.stopping.set()

    def _config_changed(self) -> None:
        if self.ingress is not None:
            self.ingress.changed()

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
            await admin_http.serve(config.admin_address, config.admin_port, admin_routes(sources)),
            await admin_http.serve(host, config.metrics_port, metrics_routes(self.metrics)),
            await admin_http.serve(host, config.readiness_port, readiness_routes(self.readiness)),
        ]

    async def _start_hbone(self) -> None:
        """Serve 15008 once a certificate is at hand (before that a handshake could not work);
        an ingress gateway has no 15008 (its listeners follow the Listener instead)."""
        await self.identity.wait_ready()
        self.readiness.mark_ready("certificate")
        if self.ingress is not None:
            return
        await self.hbone.listen(self.config.listen_address, self.config.hbone_port)
        log.info("hbone listening", extra={"address": f"{self.config.listen_address}:{self.config.hbone_port}"})

    async def _mark_xds_ready(self) -> None:
        await self.xds.ready.wait()
        self.readiness.mark_ready("xds")
        log.info("config received", extra={"gateway": self.config.gateway})
        if self.ingress is not None:
            await self.ingress.bound.wait()
            self.readiness.mark_ready("listeners")
            log.info("listeners bound", extra={"ports": self.ingress.ports})

    async def run(self) -> None:
        """Start everything, serve until asked to stop, then drain."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        self.readiness.register("certificate")
        self.readiness.register("xds")
        if self.ingress is not None:
            self.readiness.register("listeners")
        self.identity.start()
        servers = await self._serve_endpoints()
        tasks = [
            asyncio.ensure_future(self._start_hbone()),
            asyncio.ensure_future(self.xds.run()),
            asyncio.ensure_future(self._mark_xds_ready()),
            asyncio.ensure_future(self.clusters.run_outlier_timer()),
        ]
        if self.ingress is not None:
            tasks.append(asyncio.ensure_future(self.ingress.run()))
        log.info(
            "started",
            extra={"gateway": self.config.gateway, "mode": self.config.mode, "identity": str(self.config.identity)},
        )
        try:
            await self.stopping.wait()
        finally:
            await self._drain(tasks, servers)

    async def _drain(self, tasks: list[asyncio.Task[None]], servers: list[asyncio.Server]) -> None:
        active = self.ingress.active if self.ingress is not None else self.inbound.active
        log.info("draining", extra={"active": active, "deadline_seconds": self.config.drain_seconds})
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.ingress is not None:
            await self.ingress.close(self.config.drain_seconds)
        else:
            await self.hbone.close(self.config.drain_seconds)
        self.upstreams.close()
        for server in servers:
            server.close()
        await self.identity.aclose()
        if self.tracer is not None:  # export what is queued (the exporter's own timeout bounds it)
            await asyncio.to_thread(self.tracer.shutdown)
        ACCESS_LOG.flush()  # the last requests' lines before "stopped"
        log.info("stopped")


def _reporting(config: WaypointConfig) -> Reporting:
    """A waypoint reports as `waypoint`; an ingress gateway as `source`, naming itself (its pod,
    namespace and identity) as the source, as Istio's gateways do."""
    if not config.ingress:
        return Reporting()
    itself = Source(str(config.identity), config.pod_name, config.pod_namespace, None, None, config.cluster_id)
    return Reporting("source", itself)


def _tracer(config: WaypointConfig) -> Tracer | None:
    """Spans over OTLP/HTTP when `--otlp-endpoint` is set; otherwise the SDK is not even imported."""
    if not config.otlp_endpoint:
        return None
    from .tracing import otlp_tracer

    resource = {
        "service.name": f"{config.gateway_name}.{config.gateway_namespace}",  # Istio's name for a gateway
        "k8s.pod.name": config.pod_name,
        "k8s.namespace.name": config.pod_namespace,
    }
    return otlp_tracer(config.otlp_endpoint, resource)


async def run(config: WaypointConfig) -> None:
    """The process's main coroutine."""
    await Waypoint(config).run()
