"""A fake of mesh-ca's CreateCertificate, for the certificate manager's timing and back-off tests.

It signs real certificates (so the manager's checks run), valid from the injected clock's now for
the requested lifetime, and can be told to fail, to hold requests until released, or to issue for
the wrong identity. Integration tests use the real mesh-ca instead.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mesh.certs.ca_client import CaError
from mesh.clock import Clock


@dataclass(frozen=True)
class Call:
    """One CreateCertificate: for whom, when it started, the lifetime asked for."""

    identity: str
    at: datetime
    validity: int


class FakeCa:
    """Signs CSRs with a throwaway root; see the module docstring for the knobs."""

    def __init__(self, clock: Clock, trust_domain: str = "cluster.local"):
        self.clock = clock
        self.calls: list[Call] = []
        self.failures: dict[str | None, int] = {}  # identity (None: any) -> failures left (-1: forever)
        self.failure_code = "UNAVAILABLE"
        self.wrong_san: str | None = None
        self.backdate = timedelta(0)
        self.held = False
        self._release = asyncio.Event()
        self.closed = False
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        now = clock.now()
        self.root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(1)
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def root_pem(self) -> str:
        return self.root.public_bytes(serialization.Encoding.PEM).decode()

    def fail(self, identity: str | None = None, times: int = -1, code: str = "UNAVAILABLE") -> None:
        """Refuse the next `times` requests (for `identity`, or any); -1: until `recover()`."""
        self.failures[identity] = times
        self.failure_code = code

    def recover(self) -> None:
        self.failures.clear()

    def hold(self) -> None:
        """Make requests wait (after being recorded) until `release()`."""
        self.held = True
        self._release.clear()

    def release(self) -> None:
        self.held = False
        self._release.set()

    def identities(self) -> list[str]:
        return [c.identity for c in self.calls]

    async def create_certificate(
        self, csr_pem: str, validity_seconds: int, impersonate: str | None = None
    ) -> list[str]:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        (uri,) = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
        assert impersonate == uri, "ztunnel impersonates the identity its CSR names"
        self.calls.append(Call(uri, self.clock.now(), validity_seconds))
        if self.held:
            await self._release.wait()
        for key in (uri, None):
            left = self.failures.get(key, 0)
            if left:
                self.failures[key] = left - 1 if left > 0 else -1
                raise CaError(self.failure_code, f"fake CA refuses {uri}")
        return [self._sign(csr, self.wrong_san or uri, validity_seconds), self.root_pem]

    def _sign(self, csr: x509.CertificateSigningRequest, uri: str, validity: int) -> str:
        now = self.clock.now()
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.root.subject)
            .public_key(csr.public_key())
            .serial_number(secrets.randbits(64) or 1)
            .not_valid_before(now - self.backdate)
            .not_valid_after(now + timedelta(seconds=validity))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        return leaf.public_bytes(serialization.Encoding.PEM).decode()

    async def close(self) -> None:
        self.closed = True
