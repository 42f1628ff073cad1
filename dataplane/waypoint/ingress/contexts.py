"""The TLS context of each ingress filter chain, made from the SDS Secrets it names and made
again when the chain or one of those Secrets changes, so new connections get a rotated
certificate while open ones keep theirs. Not thread-safe: the event loop owns it.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable

from ..config import ConfigStore, FilterChain
from .tls_config import CertificateSecret, ValidationSecret, server_context

log = logging.getLogger("waypoint.ingress")


class ChainContexts:
    """`get(chain)` → the chain's `ssl.SSLContext`, or None while it cannot be made."""

    def __init__(self, store: ConfigStore) -> None:
        self._store = store
        self._held: dict[str, tuple[tuple[object, ...], ssl.SSLContext]] = {}

    def _secrets(self, chain: FilterChain) -> tuple[list[CertificateSecret], ValidationSecret | None] | None:
        tls = chain.tls
        assert tls is not None
        certificates = [self._store.secret(name) for name in tls.certificate_secrets]
        validation = self._store.secret(tls.validation_secret) if tls.validation_secret else None
        if not all(isinstance(c, CertificateSecret) for c in certificates):
            return None
        if tls.validation_secret and not isinstance(validation, ValidationSecret):
            return None
        return certificates, validation  # type: ignore[return-value]

    def get(self, chain: FilterChain) -> ssl.SSLContext | None:
        """The context for a new connection on `chain` (None: a Secret is missing, of the wrong
        kind, or the context cannot be made; the reason is logged without the Secret's data)."""
        if chain.tls is None:
            return None
        secrets = self._secrets(chain)
        if secrets is None:
            log.warning("ingress: the chain's Secrets are missing or of the wrong kind", extra={"chain": chain.name})
            return None
        certificates, validation = secrets
        key = (chain.tls, *certificates, validation)
        held = self._held.get(chain.name)
        if held is not None and held[0] == key:
            return held[1]
        try:
            context = server_context(chain.tls, certificates, validation)
        except (ssl.SSLError, ValueError) as e:
            reason = getattr(e, "reason", None) or type(e).__name__
            log.warning("ingress: cannot make the chain's TLS context", extra={"chain": chain.name, "reason": reason})
            return None
        self._held[chain.name] = (key, context)
        log.info(
            "ingress: TLS context made",
            extra={"chain": chain.name, "serials": [c.serial for c in certificates], "client_ca": bool(validation)},
        )
        return context

    def keep_only(self, chains: Iterable[str]) -> None:
        """Forget the contexts of chains that are gone."""
        names = set(chains)
        for name in [n for n in self._held if n not in names]:
            del self._held[name]
