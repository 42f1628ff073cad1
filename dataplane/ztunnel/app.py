"""ztunnel's wiring: one place that builds the parts, starts them, reports readiness and drains.

Parts (STYLE: ztunnel's layout): the state store fed by the xDS client; the certificate manager
(mesh-ca, impersonating each service account of the node) and the TLS contexts made from it; the
pods handed over by the node agent (ZDS) with their outbound and inbound proxies; telemetry; the
admin endpoint on the node's loopback, metrics and readiness on its underlay IP; the node's name
server for its pods (dns.py).

Shutdown (SIGTERM, SIGINT or POST /quitquitquit): stop taking ZDS and xDS updates, close every
listener, let open connections finish until the drain deadline, then cut what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

from mesh import heap
from mesh.certs.ca_client import CaClient
from mesh.certs.manager import CertificateManager
from mesh.clock import SystemClock

from . import http
from .admin import AdminSources, admin_routes, metrics_routes, readiness_routes
from .dns import NameServer, Resolver, upstreams_from
from .identity import Prefetcher, TlsContexts
from .inpod.manager import WorkloadManager
from .inpod.sockets import UpstreamConnector
from .inpod.zds_client import ZdsClient
from .metrics import Metrics
from .proxy.connection import Tracker
from .proxy.inbound import Inbound
from .proxy.outbound import Outbound
from .readiness import Readiness
from .settings import ZtunnelConfig
from .state import StateStore
from .xds_client import XdsClient

log = logging.getLogger("ztunnel")


def certificate_manager(config: ZtunnelConfig) -> CertificateManager:
    """The manager, asking mesh-ca with the node token over TLS against the mesh's roots."""
    return CertificateManager(
        lambda: CaClient(config.ca_address, config.roots_pem(), config.token()),
        SystemClock(),
        config.trust_domain,
        ttl=config.cert_ttl,
    )


class Ztunnel:
    """The node proxy process: `await Ztunnel(config).run()` until asked to stop."""

    def __init__(self, config: ZtunnelConfig) -> None:
        self.config = config
        self.store = StateStore()
        self.metrics = Metrics()
        self.tracker = Tracker(self.metrics)
        self.certs = certificate_manager(config)
        self.contexts = TlsContexts(self.certs, config.roots_pem)
        self.prefetcher = Prefetcher(self.certs)
        self.readiness = Readiness()
        self.xds = XdsClient(config, self.store, lambda _type: self._identities_changed())
        outbound = Outbound(self.store, self.contexts, self.tracker, config.cluster_id, self.xds.ready)
        inbound = Inbound(
            self.store, self.contexts, self.tracker, UpstreamConnector(), config.trust_domain, self.xds.ready
        )
        self.pods = WorkloadManager(
            self.store,
            self.contexts,
            outbound,
            inbound,
            trust_domain=config.trust_domain,
            cluster_id=config.cluster_id,
            grace=config.drain_seconds,
            on_change=self._identities_changed,
        )
        self.zds = ZdsClient(config.zds_socket, self.pods)
        self.names: NameServer | None = None
        if config.dns is not None:
            upstreams = upstreams_from(Path("/etc/resolv.conf"), skip=config.dns[0])
            resolver = Resolver(self.store, config.dns_domain, upstreams, self.xds.ready.is_set)
            self.names = NameServer(resolver, *config.dns)
        self.stopping = asyncio.Event()
        self._refresh_pending = False

    def _identities_changed(self) -> None:
        """Prefetch the service accounts of the node's workloads (coalesced per loop turn)."""
        if not self._refresh_pending:
            self._refresh_pending = True
            asyncio.get_running_loop().call_soon(self._refresh_identities)

    def _refresh_identities(self) -> None:
        self._refresh_pending = False
        wanted = {w.identity for w in self.store.workloads_on_node(self.config.node)}
        self.prefetcher.update(wanted, self.pods.identities())

    def stop(self) -> None:
        """Begin the drain (idempotent)."""
        self.stopping.set()

    async def _serve_endpoints(self) -> list[asyncio.Server]:
        config = self.config
        sources = AdminSources(
            config,
            self.store,
            self.certs,
            self.contexts,
            self.tracker,
            self.pods,
            self.xds,
            self.readiness,
            self.metrics,
            self.stop,
            time.time(),
        )
        return [
            await http.serve(config.admin_address, config.admin_port, admin_routes(sources)),
            await http.serve(config.node_ip, config.metrics_port, metrics_routes(self.metrics)),
            await http.serve(config.node_ip, config.readiness_port, readiness_routes(self.readiness)),
        ]

    async def _mark_when(self, name: str, event: asyncio.Event) -> None:
        await event.wait()
        self.readiness.mark_ready(name)
        if self.readiness.ready:
            log.info("ready", extra={"node": self.config.node})

    async def run(self) -> None:
        """Start everything, serve until asked to stop, then drain."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        self.certs.start()
        servers = await self._serve_endpoints()
        if self.names is not None:
            try:
                await self.names.start()
            except OSError as e:  # a name server of the node's own on port 53: pods keep it
                log.error("not answering names", extra={"address": self.names.where, "error": str(e)})
                self.names = None
        self.readiness.register("xds")
        self.readiness.register("zds")
        tasks = [
            asyncio.ensure_future(self.xds.run()),
            asyncio.ensure_future(self.zds.run()),
            asyncio.ensure_future(self._mark_when("xds", self.xds.ready)),
            asyncio.ensure_future(self._mark_when("zds", self.zds.snapshot_received)),
            asyncio.ensure_future(heap.trim_periodically()),  # RSS is a budget (mesh/heap.py)
        ]
        log.info(
            "started",
            extra={"node": self.config.node, "admin": f"{self.config.admin_address}:{self.config.admin_port}"},
        )
        try:
            await self.stopping.wait()
        finally:
            await self._drain(tasks, servers)

    async def _drain(self, tasks: list[asyncio.Task[None]], servers: list[asyncio.Server]) -> None:
        deadline = self.config.drain_seconds
        log.info("draining", extra={"open_connections": len(self.tracker.open), "deadline_seconds": deadline})
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.names is not None:  # a new ztunnel (SO_REUSEPORT) takes the questions from here
            await self.names.close()
        await self.pods.close(deadline)
        left = len(self.tracker.open)
        for server in servers:
            server.close()
        await self.contexts.aclose()
        await self.certs.aclose()
        log.info("stopped", extra={"connections_cut": left})


async def run(config: ZtunnelConfig) -> None:
    """The process's main coroutine."""
    app = Ztunnel(config)
    await app.run()


async def request_certificate(config: ZtunnelConfig, identity_text: str) -> tuple[bool, str]:
    """Diagnostic: ask mesh-ca for `identity_text` exactly as this node's ztunnel would (node
    token, impersonation, same manager); (issued?, a one-line report)."""
    from mesh.certs.certificate import CertificateError
    from mesh.identity import Identity, IdentityError

    try:
        identity = Identity.parse(identity_text)
    except IdentityError as e:
        return False, f"not a mesh identity: {e}"
    async with certificate_manager(config) as certs:
        with contextlib.suppress(TimeoutError):
            try:
                cert = await asyncio.wait_for(certs.get(identity), 15)
            except CertificateError as e:
                return False, f"refused: {e}"
            return True, f"issued: {identity} serial {cert.serial} valid until {cert.not_after.isoformat()}"
    return False, "no answer from the CA within 15 s"
