"""ztunnel's certificates: TLS contexts per identity (mesh/certs/contexts.py, shared with the
waypoint) and the prefetch of the node's service accounts.

Which identities are prefetched (reference §8): every service account with a workload on this
node, at WARMUP priority; live traffic asks at REALTIME and goes first.
"""

from __future__ import annotations

import logging

from mesh.certs.certificate import CertificateError
from mesh.certs.contexts import POLL_SECONDS, Contexts, TlsContexts
from mesh.certs.manager import CertificateManager
from mesh.identity import Identity

__all__ = ["POLL_SECONDS", "Contexts", "Prefetcher", "TlsContexts"]

log = logging.getLogger("ztunnel.identity")


class Prefetcher:
    """Keeps the certificate manager warm for every service account with a workload on this node,
    and lets it forget those that left (so no refreshes run for them)."""

    def __init__(self, certs: CertificateManager) -> None:
        self._certs = certs
        self.managed: set[Identity] = set()

    def update(self, wanted: set[Identity], in_use: set[Identity]) -> None:
        """`wanted`: identities of the node's workloads; `in_use`: identities of enrolled pods
        (never forgotten while a pod holds them)."""
        keep = wanted | in_use
        for identity in sorted(keep - self.managed, key=str):
            try:
                self._certs.prefetch(identity)
            except CertificateError as e:
                log.warning("cannot prefetch", extra={"identity": str(identity), "error": str(e)})
                continue
            self.managed.add(identity)
        for identity in self.managed - keep:
            self._certs.forget(identity)
        self.managed &= keep
