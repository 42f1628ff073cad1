"""Real certificates for HBONE tests, minted by the CA's own signing code (services/ca/authority).

A `Pki` is one root (one trust domain); `workload(sa)` issues a leaf for
`spiffe://{trust_domain}/ns/{namespace}/sa/{sa}` from a CSR made the way ztunnel makes it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

from mesh.certs.csr import make_csr
from mesh.hbone.tls import client_context, server_context
from mesh.identity import Identity
from services.ca.authority import SigningCA, cert_pem, issue, make_root
from services.ca.csr_checks import check_csr


@dataclass(frozen=True)
class Workload:
    """A workload certificate chain (leaf first) and its key, both PEM."""

    identity: str
    chain_pem: str
    key_pem: bytes


class Pki:
    """A root for `trust_domain` and the workload certificates it signs."""

    def __init__(self, trust_domain: str = "cluster.local") -> None:
        self.trust_domain = trust_domain
        self.now = datetime.now(UTC)
        root, key = make_root(trust_domain, self.now)
        self._ca = SigningCA(root, key)
        self.bundle_pem = cert_pem(root)

    def workload(self, service_account: str, namespace: str = "default") -> Workload:
        identity = Identity(self.trust_domain, namespace, service_account)
        made = make_csr(identity)
        chain = issue(self._ca, check_csr(made.csr_pem, self.trust_domain), 3600, self.now)
        return Workload(str(identity), "".join(chain), made.key_pem)

    def client(self, service_account: str, bundle_pem: str | None = None) -> ssl.SSLContext:
        made = self.workload(service_account)
        return client_context(made.chain_pem, made.key_pem, bundle_pem or self.bundle_pem)

    def server(self, service_account: str, bundle_pem: str | None = None) -> ssl.SSLContext:
        made = self.workload(service_account)
        return server_context(made.chain_pem, made.key_pem, bundle_pem or self.bundle_pem)
