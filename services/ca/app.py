"""mesh-ca's wiring: keys, istiod watches, the issuer, the gRPC server, metrics, rotation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
from prometheus_client import start_http_server

from mesh.kubeclient import NODES, PODS, ApiStatusError, Connection, Informer, KubeClient
from mesh.node_auth import NodeAuthenticator
from mesh.settings import host_port

from .audit import AuditLog
from .issuing import Issuer, Limits
from .keystore import KeyStore
from .metrics import CaMetrics
from .node_authorizer import NodeAuthorizer, PlacementIndex
from .pod_binding import PodBindingAuthorizer
from .server import CertificateServicer, TrustBundleServicer, add_services
from .serving import serving_pair, write_pair
from .settings import CaSettings

log = logging.getLogger("mesh-ca")


def connection(settings: CaSettings) -> Connection:
    """How to reach istiod: flags first, then what istiod recorded in the shared state dir."""
    state = settings.state_dir
    token_file = settings.token_file or state / "reader-token"
    if settings.istiod:
        ca_file = str(settings.istiod_ca_file) if settings.istiod_ca_file else None
        return Connection(settings.istiod, Path(token_file).read_text().strip(), ca_file)
    conn = Connection.from_state_dir(state, Path(token_file))
    if settings.istiod_ca_file:
        conn = Connection(conn.url, conn.token, str(settings.istiod_ca_file))
    return conn


class CaApp:
    """Owns every part of a running mesh-ca."""

    def __init__(self, settings: CaSettings):
        self.settings = settings
        self.metrics = CaMetrics()
        self.keystore: KeyStore | None = None
        self.server: grpc.aio.Server | None = None
        self._serving: tuple[bytes, bytes] | None = None
        self._serving_for: bytes = b""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def _bundle(self) -> list[str]:
        assert self.keystore is not None
        return self.keystore.trust_bundle(self.now())

    def _credentials(self) -> grpc.ServerCredentials:
        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called for each handshake: hand gRPC a new pair only when the signing CA changed.
            changed = self._refresh_serving()
            return grpc.ssl_server_certificate_configuration([self._serving]) if changed else None

        self._refresh_serving()
        initial = grpc.ssl_server_certificate_configuration([self._serving])
        return grpc.dynamic_ssl_server_credentials(initial, fetch)

    def _refresh_serving(self) -> bool:
        assert self.keystore is not None
        signing = self.keystore.signing(self.now())
        fingerprint = signing.cert.fingerprint(signing.cert.signature_hash_algorithm)
        if self._serving is not None and fingerprint == self._serving_for:
            return False
        self._serving = serving_pair(signing, self.settings.trust_domain, self.settings.tls_san, self.now())
        self._serving_for = fingerprint
        xds = serving_pair(signing, self.settings.trust_domain, self.settings.xds_san, self.now(), service="mesh-xds")
        state = self.settings.state_dir
        write_pair(xds, state / "xds-cert.pem", state / "xds-key.pem")
        return True

    async def run(self) -> None:
        settings = self.settings
        state = settings.ensure_state_dir()
        self.keystore = KeyStore.open(state, settings.trust_domain, cacerts_dir=settings.cacerts)
        self.keystore.write_bundle(state / "root-cert.pem")
        self._refresh_serving()  # also writes mesh-xds's serving pair
        conn = connection(settings)
        async with KubeClient(conn) as client:
            pods, nodes = Informer(client, PODS), Informer(client, NODES)
            authorizer = NodeAuthorizer(PlacementIndex(), lambda node: _pods_on(client, node))
            pods.handlers.append(authorizer.on_pod_event)
            authenticator = NodeAuthenticator(
                lambda: _jwks(conn), lambda name: nodes.get(name), lambda name: _node(client, name)
            )
            audit = AuditLog(state / "ca-audit.log")
            limits = Limits(settings.default_cert_ttl, settings.max_cert_ttl, settings.min_cert_ttl)
            pod_binding = PodBindingAuthorizer(
                lambda ns, name: pods.get(name, ns), lambda ns, name: _pod(client, ns, name)
            )
            issuer = Issuer(
                self.keystore, authenticator, authorizer, audit, settings.trust_domain, limits, pod_binding=pod_binding
            )
            tasks = [asyncio.create_task(pods.run()), asyncio.create_task(nodes.run())]
            tasks.append(asyncio.create_task(self._watch_keystore(state)))
            try:
                await self._serve(issuer)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                audit.close()

    async def _serve(self, issuer: Issuer) -> None:
        settings = self.settings
        server = grpc.aio.server()
        self.server = server
        add_services(
            server, CertificateServicer(issuer, self.metrics), TrustBundleServicer(self._bundle, settings.trust_domain)
        )
        host, port = host_port(settings.listen)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if settings.plaintext:
            log.warning("serving gRPC without TLS (--plaintext): for local debugging only")
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, self._credentials())
        if settings.metrics_listen:
            mhost, mport = host_port(settings.metrics_listen)
            start_http_server(mport, addr=mhost, registry=self.metrics.registry)
        await server.start()
        log.info("mesh-ca serving", extra={"listen": settings.listen, "trust_domain": settings.trust_domain})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("mesh-ca stopping")
        await server.stop(grace=5)

    async def _watch_keystore(self, state: Path) -> None:
        """Pick up root rotations made by `mesh-ca rotate-root` and keep root-cert.pem current."""
        assert self.keystore is not None
        last = self._bundle()
        while True:
            await asyncio.sleep(self.settings.keystore_reload)
            try:
                self.keystore.reload()
            except Exception as e:  # a half-written file: keep the last good keys
                log.warning("keystore reload failed: %s", e)
                continue
            self._refresh_serving()  # a root that started signing: new serving certificates
            bundle = self._bundle()
            if bundle != last:
                self.keystore.write_bundle(state / "root-cert.pem")
                log.info("trust bundle changed", extra={"roots": len(bundle)})
                last = bundle


async def _pods_on(client: KubeClient, node: str) -> list[dict]:
    items, _ = await client.list(PODS, field_selector=f"spec.nodeName={node}")
    return items


async def _pod(client: KubeClient, namespace: str, name: str) -> dict | None:
    try:
        return await client.get(PODS, name, namespace)
    except ApiStatusError as e:
        if e.code == 404:
            return None
        raise


async def _node(client: KubeClient, name: str) -> dict | None:
    try:
        return await client.get(NODES, name)
    except ApiStatusError as e:
        if e.code == 404:
            return None
        raise


async def _jwks(conn: Connection) -> dict:
    async with httpx.AsyncClient(verify=conn.verify(), timeout=10) as http:
        response = await http.get(f"{conn.url}/.well-known/jwks.json")
        response.raise_for_status()
        return response.json()
