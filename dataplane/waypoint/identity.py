"""The waypoint's own identity: its certificate from mesh-ca and the TLS contexts made from it.

docs/waypoint.md, "Identity (contract)": the waypoint asks mesh-ca with its service-account token
as the bearer and no impersonation (the CA signs only the token's own identity). The certificate
manager (mesh/certs/manager.py) refreshes at half-life and backs off on failure; the contexts
(mesh/certs/contexts.py) are rebuilt within a second of a rotation. The same certificate is the
HBONE server's (15008), the HBONE client's (to endpoints) and the xDS client's.
"""

from __future__ import annotations

import ssl

from mesh.certs.ca_client import CaClient
from mesh.certs.certificate import Certificate
from mesh.certs.contexts import TlsContexts
from mesh.certs.manager import CertificateManager, CertificateStatus, Priority
from mesh.clock import SystemClock

from .settings import WaypointConfig


class TokenCaClient:
    """A mesh-ca client that reads the token file before every request (mesh-runtime rewrites it
    at 80 % of its lifetime) and impersonates no one: the token is the pod's own, and mesh-ca
    signs only its identity."""

    def __init__(self, config: WaypointConfig) -> None:
        self._config = config
        self._client = CaClient(config.ca_address, config.roots_pem(), config.token())

    async def create_certificate(
        self, csr_pem: str, validity_seconds: int, impersonate: str | None = None
    ) -> list[str]:
        """The signed chain for the CSR (CaError when refused); `impersonate`, which the
        certificate manager passes, is dropped."""
        self._client.token = self._config.token()
        return await self._client.create_certificate(csr_pem, validity_seconds, None)

    async def close(self) -> None:
        await self._client.close()


class WaypointIdentity:
    """One identity's certificate, kept current, and its contexts. `start()` on the loop first."""

    def __init__(self, config: WaypointConfig) -> None:
        self.identity = config.identity
        self.certs = CertificateManager(
            lambda: TokenCaClient(config), SystemClock(), config.trust_domain, ttl=config.cert_ttl
        )
        self.contexts = TlsContexts(self.certs, config.roots_pem)
        self._roots_pem = config.roots_pem

    def start(self) -> None:
        """Start the manager and the keeper that rebuilds the contexts on rotation."""
        self.certs.start()
        self.contexts.track(self.identity)

    async def wait_ready(self) -> None:
        """Until a first certificate is at hand (retrying while the CA refuses or is away)."""
        await self.contexts.wait_server(self.identity)

    def server_context(self, _local_address: str = "") -> ssl.SSLContext | None:
        """The 15008 server's context (a `ContextSelector`: every local address gets it)."""
        return self.contexts.server(self.identity)

    async def client_context(self) -> ssl.SSLContext:
        """The context for HBONE to an endpoint (CertificateError when none can be had)."""
        return await self.contexts.client(self.identity)

    async def current(self) -> Certificate:
        """The current certificate (waiting for one if needed)."""
        return await self.certs.get(self.identity, Priority.REALTIME)

    def certificate(self) -> Certificate | None:
        """The latest certificate seen, for config_dump."""
        return self.contexts.certificate(self.identity)

    def status(self) -> list[CertificateStatus]:
        return self.certs.certificates()

    def roots_pem(self) -> bytes:
        return self._roots_pem()

    async def aclose(self) -> None:
        await self.contexts.aclose()
        await self.certs.aclose()
