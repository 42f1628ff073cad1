"""Workload certificates as TLS contexts: what a proxy asks the certificate manager for.

The certificate manager (manager.py) owns fetching, rotation and back-off. This module turns its
current certificate of an identity into HBONE client and server contexts, rebuilt when the serial
changes, and keeps the latest ones at hand for code that cannot wait: an HBONE server picks its
context synchronously, before the handshake (mesh/hbone/tls.py). A keeper task per tracked
identity polls the manager every second, so a rotated certificate serves new connections within a
second; established ones keep theirs. Shared by ztunnel (one identity per pod on the node) and the
waypoint (its own identity).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from mesh.hbone import client_context, server_context
from mesh.identity import Identity

from .certificate import Certificate, CertificateError
from .manager import CertificateManager, Priority

log = logging.getLogger("mesh.certs.contexts")
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Contexts:
    """One certificate and the contexts made from it."""

    certificate: Certificate
    client: ssl.SSLContext
    server: ssl.SSLContext


class TlsContexts:
    """Identity → the TLS contexts of its current certificate (see the module docstring)."""

    def __init__(self, certs: CertificateManager, roots_pem: Callable[[], bytes]) -> None:
        self._certs = certs
        self._roots_pem = roots_pem
        self._current: dict[Identity, Contexts] = {}
        self._tracked: Counter[Identity] = Counter()
        self._keepers: dict[Identity, asyncio.Task[None]] = {}

    def _contexts_for(self, cert: Certificate) -> Contexts:
        held = self._current.get(cert.identity)
        if held is not None and held.certificate.serial == cert.serial:
            return held
        try:
            bundle = self._roots_pem().decode()
        except OSError:
            bundle = ""
        bundle = "".join([bundle, *[r for r in cert.roots if r not in bundle]])
        chain = "".join(cert.chain)
        made = Contexts(cert, client_context(chain, cert.key_pem, bundle), server_context(chain, cert.key_pem, bundle))
        self._current[cert.identity] = made
        return made

    async def client(self, identity: Identity) -> ssl.SSLContext:
        """The client context of `identity` for a connection now (live traffic: REALTIME).
        CertificateError when no certificate can be had."""
        cert = await self._certs.get(identity, Priority.REALTIME)
        return self._contexts_for(cert).client

    async def wait_server(self, identity: Identity, retry: float = 0.5) -> ssl.SSLContext:
        """The server context of `identity`, waiting (and retrying) until a certificate exists."""
        while True:
            try:
                return self._contexts_for(await self._certs.get(identity, Priority.REALTIME)).server
            except CertificateError as e:
                log.info("waiting for a certificate", extra={"identity": str(identity), "error": str(e)})
            await asyncio.sleep(retry)

    def server(self, identity: Identity) -> ssl.SSLContext | None:
        """The server context of `identity`'s latest certificate, or None while there is none."""
        held = self._current.get(identity)
        return held.server if held is not None else None

    def certificate(self, identity: Identity) -> Certificate | None:
        """The latest certificate seen for `identity` (config_dump shows it)."""
        held = self._current.get(identity)
        return held.certificate if held is not None else None

    def track(self, identity: Identity) -> None:
        """Keep `identity`'s contexts current (a pod with it was added); counted per caller."""
        self._tracked[identity] += 1
        if identity not in self._keepers:
            self._keepers[identity] = asyncio.ensure_future(self._keep(identity))

    def untrack(self, identity: Identity) -> None:
        """One caller no longer needs `identity` (its pod left); the last one stops the keeper."""
        self._tracked[identity] -= 1
        if self._tracked[identity] <= 0:
            del self._tracked[identity]
            keeper = self._keepers.pop(identity, None)
            if keeper is not None:
                keeper.cancel()

    async def _keep(self, identity: Identity) -> None:
        while True:
            try:
                self._contexts_for(await self._certs.get(identity, Priority.WARMUP))
            except CertificateError as e:
                log.debug("no certificate yet", extra={"identity": str(identity), "error": str(e)})
            except Exception:
                log.exception("certificate keeper failed", extra={"identity": str(identity)})
            await asyncio.sleep(POLL_SECONDS)

    async def aclose(self) -> None:
        """Stop every keeper."""
        keepers = list(self._keepers.values())
        self._keepers.clear()
        for keeper in keepers:
            keeper.cancel()
        for keeper in keepers:
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
