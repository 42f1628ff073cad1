"""Signing: workload certificates from a checked CSR, and self-signed roots (DESIGN §5).

Pure: keys and times come in as arguments, PEM strings go out; nothing reads a clock or a file.
Everything about a leaf that does not depend on the request (issuer, key usages, authority key
identifier, the PEM of the rest of the chain) is computed once per `SigningCA`, because the CA
must sign well over a thousand certificates a second on one core.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .csr_checks import CheckedCSR

# Clients whose clock runs a little behind ours must still accept a certificate issued now.
LEAF_BACKDATE = timedelta(minutes=1)
# A root is backdated further: a root "not yet valid" on some host fails every chain under it.
ROOT_BACKDATE = timedelta(hours=1)

CAKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_EMPTY_SUBJECT = x509.Name([])
# RFC 5280 §4.2.1.3: keyEncipherment is only meaningful for RSA, but Istio sets both bits on every
# workload certificate and verifiers ignore the one that does not apply.
_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_ROOT_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_EKU = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
_SHA256 = hashes.SHA256()


class AuthorityError(Exception):
    """The signing material cannot sign: key and certificate differ, not a CA, or expired."""


def cert_pem(cert: x509.Certificate) -> str:
    """`cert` in PEM, as a string (the form of every element of Istio's `cert_chain`)."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass(frozen=True)
class SigningCA:
    """The certificate and key that sign leaves, and the chain above them.

    `chain` holds the certificates from `cert`'s issuer up to and including the root, and is
    empty when `cert` is itself the root. Immutable, so one instance may be shared by threads.
    """

    cert: x509.Certificate
    key: CAKey
    chain: tuple[x509.Certificate, ...] = ()
    # Precomputed once: the PEMs that follow every leaf, and a builder holding every extension
    # and name that is the same for all leaves this CA issues.
    _tail: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _template: x509.CertificateBuilder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, CAKey):
            raise AuthorityError(f"{type(self.key).__name__} keys cannot sign here; use ECDSA or RSA")
        if self.key.public_key() != self.cert.public_key():
            raise AuthorityError("the signing key does not match the signing certificate")
        try:
            constraints = self.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise AuthorityError(f"{self.cert.subject.rfc4514_string()!r} is not a CA certificate")
        tail = (cert_pem(self.cert), *(cert_pem(c) for c in self.chain))
        template = (
            x509.CertificateBuilder()
            .issuer_name(self.cert.subject)
            .subject_name(_EMPTY_SUBJECT)
            .add_extension(_LEAF_KEY_USAGE, critical=True)
            .add_extension(_LEAF_EKU, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        object.__setattr__(self, "_tail", tail)
        object.__setattr__(self, "_template", template)

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        # Copy the CA's own SubjectKeyIdentifier when it has one, as Go's x509 does: a plugged-in
        # CA may have derived it by another method than SHA-1 of the key (RFC 5280 §4.2.1.2), and
        # verifiers match AKI to SKI byte for byte when choosing among same-named issuers.
        try:
            ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    @property
    def not_after(self) -> datetime:
        """When the signing certificate expires; no leaf outlives it."""
        return self.cert.not_valid_after_utc


def issue(ca: SigningCA, checked: CheckedCSR, ttl_seconds: int, now: datetime) -> list[str]:
    """Sign a workload certificate for `checked` and return Istio's `cert_chain` (see sign_leaf)."""
    return sign_leaf(ca, checked, ttl_seconds, now)[1]


def sign_leaf(
    ca: SigningCA, checked: CheckedCSR, ttl_seconds: int, now: datetime
) -> tuple[x509.Certificate, list[str]]:
    """Sign a workload certificate for `checked`: the leaf, and Istio's `cert_chain`.

    The result is one PEM certificate per element: the leaf, the signing certificate, then
    `ca.chain` (the root last; when the signing certificate is the root it appears once, last).
    The leaf is valid from `now` less one minute to `now + ttl_seconds`, cut at the signing
    certificate's own expiry. `now` must be timezone-aware.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, not {ttl_seconds}")
    not_after = min(now + timedelta(seconds=ttl_seconds), ca.not_after)
    if not_after <= now:
        raise AuthorityError(f"the signing certificate expired at {ca.not_after.isoformat()}; rotate the CA")
    leaf = (
        ca._template.serial_number(secrets.randbits(128) or 1)
        .public_key(checked.public_key)
        .not_valid_before(now - LEAF_BACKDATE)
        .not_valid_after(not_after)
        # RFC 5280 §4.2.1.6: with an empty subject the SAN extension must be critical.
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(checked.identity))]), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(checked.public_key), critical=False)
        .sign(ca.key, _SHA256)
    )
    return leaf, [cert_pem(leaf), *ca._tail]


def make_root(
    trust_domain: str, now: datetime, *, days: int = 3650
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed ECDSA P-256 root for `trust_domain`, valid `days` from `now`.

    Its subject is only `O={trust_domain}` (Istio's self-signed root), so leaves show that as
    issuer. Successive roots share the subject; verifiers tell them apart by key identifier.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(128) or 1)
        .not_valid_before(now - ROOT_BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ROOT_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _SHA256)
    )
    return cert, key
