"""A workload certificate as its holder keeps it, built from the CA's `cert_chain` (reference §8).

The CA answers with one PEM certificate per element, the leaf first and the root last. The holder
checks, as ztunnel does (istio/ztunnel: src/identity/caclient.rs), that the leaf's one URI SAN is
the identity it asked for, and also that the leaf carries the public key it generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mesh.identity import Identity


class CertificateError(Exception):
    """A certificate could not be obtained or used; the message says for which identity and why."""


@dataclass(frozen=True)
class Certificate:
    """One identity's key and certificate.

    `chain` is what a TLS endpoint presents: the leaf first, then any intermediates (the root is
    left out). `roots` are the trust anchors the CA returned (its chain's last element). `serial`
    is the leaf's serial number in lowercase hex.
    """

    identity: Identity
    key_pem: bytes = field(repr=False)
    chain: tuple[str, ...]
    roots: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: str

    @property
    def leaf_pem(self) -> str:
        return self.chain[0]

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before

    def expired(self, now: datetime) -> bool:
        return now >= self.not_after

    def refresh_at(self, received: datetime) -> datetime:
        """When to fetch the next certificate: at half-life, not_before + lifetime / 2 (ztunnel's
        rule, reference §8). The CA backdates not_before (a minute, for clock skew), which for a
        short lifetime puts the half-life at or before the moment of issue and would refresh in a
        loop; so never sooner than halfway through what was left when the certificate arrived."""
        half_life = self.not_before + self.lifetime / 2
        return max(half_life, received + (self.not_after - received) / 2)


def certificate_from_chain(identity: Identity, key_pem: bytes, chain_pems: Sequence[str]) -> Certificate:
    """Check and keep the CA's answer to a CSR for `identity` made with `key_pem`."""
    if not chain_pems:
        raise CertificateError(f"{identity}: the CA returned an empty certificate chain")
    try:
        leaf = x509.load_pem_x509_certificate(chain_pems[0].encode())
    except ValueError as e:
        raise CertificateError(f"{identity}: the leaf certificate is not PEM: {e}") from None
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris != [str(identity)]:
        raise CertificateError(f"{identity}: the CA issued a certificate for {uris or 'no URI SAN'}")
    key = serialization.load_pem_private_key(key_pem, password=None)
    if leaf.public_key() != key.public_key():
        raise CertificateError(f"{identity}: the issued certificate does not carry the requested key")
    chain, roots = list(chain_pems), []
    if len(chain) > 1:
        roots = [chain.pop()]
    return Certificate(
        identity=identity,
        key_pem=key_pem,
        chain=tuple(chain),
        roots=tuple(roots),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        serial=format(leaf.serial_number, "x"),
    )
