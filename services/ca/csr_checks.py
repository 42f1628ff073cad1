"""Checks on a certificate signing request before anything is signed (DESIGN §5, issue 3).

Pure: bytes in, a `CheckedCSR` or a `CsrError` out. Each refusal has its own machine reason
(`CsrError.reason`, a metric label and audit field) and a human `detail` for the log. The CA
copies nothing from the CSR but its public key and its one URI SAN, so extensions a client asks
for (CA:true, extra key usages) are ignored rather than refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mesh.identity import Identity, IdentityError

MAX_CSR_BYTES = 64 * 1024

# RSA below 2048 bits is breakable in practice (NIST SP 800-131A); above 8192 a single
# signature check costs tens of milliseconds, a cheap way for a caller to tie up a CA core.
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192

_CURVES = (ec.SECP256R1, ec.SECP384R1)
_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

# One block, whitespace only around it. RFC 7468 §2 allows explanatory text outside a block,
# but a CA reading requests from machines has no use for it, and `load_pem_x509_csr` would
# silently take the first of several blocks.
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_CSR_LABELS = (b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")

LeafPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class Reason(StrEnum):
    """Why a CSR was refused; the value is the machine code used in metrics and the audit log."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    WEAK_SIGNATURE = "weak-signature"
    WEAK_KEY = "weak-key"
    NO_SAN = "no-san"
    SEVERAL_SANS = "several-sans"
    OTHER_SANS = "other-sans"
    NOT_SPIFFE = "not-spiffe"
    FOREIGN_TRUST_DOMAIN = "foreign-trust-domain"


class CsrError(Exception):
    """A refused CSR: `reason` is the short machine code, `detail` says what was wrong."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CheckedCSR:
    """A CSR that passed every check: its identity (the one URI SAN) and its public key."""

    identity: Identity
    csr: x509.CertificateSigningRequest
    public_key: LeafPublicKey


def check_csr(pem: str | bytes, trust_domain: str, *, max_bytes: int = MAX_CSR_BYTES) -> CheckedCSR:
    """Parse and check a PEM CSR for a workload of `trust_domain`; `CsrError` on any defect.

    Checks run cheapest first, and the key and hash are judged before the signature is
    verified, so no verification runs with an algorithm the CA refuses anyway.
    """
    data = pem.encode("utf-8", "replace") if isinstance(pem, str) else bytes(pem)
    if len(data) > max_bytes:
        raise CsrError(Reason.OVERSIZED, f"{len(data)} bytes, more than the {max_bytes} allowed")
    csr = _parse(data)
    public_key = _check_key(csr)
    _check_signature(csr)
    identity = _check_san(csr)
    if identity.trust_domain != trust_domain:
        raise CsrError(
            Reason.FOREIGN_TRUST_DOMAIN,
            f"{identity} is in trust domain {identity.trust_domain!r}; this CA signs for {trust_domain!r}",
        )
    return CheckedCSR(identity=identity, csr=csr, public_key=public_key)


def clamp_validity(requested: int, *, default: int = 86400, maximum: int = 86400, minimum: int = 600) -> int:
    """The lifetime in seconds to issue for a request of `requested` seconds.

    Zero or negative means "no preference" (proto3's default for `validity_duration`), which
    gets `default`; anything else is held within [minimum, maximum]. A floor exists because a
    certificate shorter than a few minutes would have its holder renewing continuously.
    """
    if minimum > maximum:
        raise ValueError(f"minimum {minimum} is above maximum {maximum}")
    wanted = default if requested <= 0 else requested
    return max(minimum, min(wanted, maximum))


def _parse(data: bytes) -> x509.CertificateSigningRequest:
    blocks = _PEM_BLOCK.findall(data)
    if len(blocks) != 1:
        raise CsrError(Reason.MALFORMED, f"expected one PEM block, found {len(blocks)}")
    label = blocks[0]
    if label not in _CSR_LABELS:
        raise CsrError(Reason.MALFORMED, f"PEM block is {label.decode()!r}, not 'CERTIFICATE REQUEST'")
    start = data.index(b"-----BEGIN ")
    end_marker = b"-----END " + label + b"-----"
    end = data.find(end_marker)
    if end < 0:
        raise CsrError(Reason.MALFORMED, f"no '-----END {label.decode()}-----' line")
    if data[:start].strip() or data[end + len(end_marker) :].strip():
        raise CsrError(Reason.MALFORMED, "text outside the PEM block")
    try:
        csr = x509.load_pem_x509_csr(data)
    except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as e:
        raise CsrError(Reason.MALFORMED, f"not a PKCS#10 request: {e}") from None
    if _signature_unused_bits(csr.public_bytes(serialization.Encoding.DER)) != 0:
        # The parser tolerates a signature BIT STRING that claims padding bits: the same request
        # would then have two encodings. Signatures are whole octets (RFC 2986), so refuse it.
        raise CsrError(Reason.MALFORMED, "the signature is not a whole number of octets")
    return csr


def _tlv(der: bytes, at: int) -> tuple[int, int]:
    """(where the contents of the DER element at `at` start, where the element ends)."""
    length, at = der[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        length, at = int.from_bytes(der[at : at + count], "big"), at + count
    return at, at + length


def _signature_unused_bits(der: bytes) -> int:
    """The unused-bits octet of a parsed request's signature (its outer SEQUENCE's third element)."""
    at, _ = _tlv(der, 0)  # into CertificationRequest
    _, at = _tlv(der, at)  # past certificationRequestInfo
    _, at = _tlv(der, at)  # past signatureAlgorithm
    contents, _ = _tlv(der, at)  # the signature BIT STRING
    return der[contents]


def _check_key(csr: x509.CertificateSigningRequest) -> LeafPublicKey:
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CsrError(Reason.WEAK_KEY, f"public key not usable: {e}") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise CsrError(Reason.WEAK_KEY, f"ECDSA curve {key.curve.name} refused; use P-256 or P-384")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise CsrError(
                Reason.WEAK_KEY, f"RSA key of {key.key_size} bits refused; use {MIN_RSA_BITS} to {MAX_RSA_BITS}"
            )
        return key
    raise CsrError(Reason.WEAK_KEY, f"{type(key).__name__} refused; use ECDSA P-256/P-384 or RSA >= 2048 bits")


def _check_signature(csr: x509.CertificateSigningRequest) -> None:
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm as e:
        raise CsrError(Reason.WEAK_SIGNATURE, f"signature algorithm not supported: {e}") from None
    if not isinstance(algorithm, _HASHES):
        name = algorithm.name if algorithm is not None else "none"
        raise CsrError(Reason.WEAK_SIGNATURE, f"signature hash {name} refused; use SHA-256, SHA-384 or SHA-512")
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CsrError(Reason.BAD_SIGNATURE, f"signature cannot be checked: {e}") from None
    if not valid:
        # Proof of possession (RFC 2986 §3): without it anyone could get a certificate for
        # someone else's public key.
        raise CsrError(Reason.BAD_SIGNATURE, "signature does not verify with the request's own key")


def _check_san(csr: x509.CertificateSigningRequest) -> Identity:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CsrError(Reason.NO_SAN, "no subjectAltName extension") from None
    except x509.UnsupportedGeneralNameType as e:
        raise CsrError(Reason.OTHER_SANS, f"SANs other than the SPIFFE ID are refused: {e}") from None
    except (ValueError, x509.DuplicateExtension) as e:
        raise CsrError(Reason.MALFORMED, f"extensions do not parse: {e}") from None
    uris = [name.value for name in san if isinstance(name, x509.UniformResourceIdentifier)]
    others = [name for name in san if not isinstance(name, x509.UniformResourceIdentifier)]
    if not uris:
        raise CsrError(Reason.NO_SAN, "subjectAltName has no URI; it must hold the SPIFFE ID")
    if len(uris) > 1:
        raise CsrError(Reason.SEVERAL_SANS, f"{len(uris)} URI SANs; exactly one SPIFFE ID is signed per certificate")
    if others:
        kinds = sorted({type(name).__name__ for name in others})
        raise CsrError(Reason.OTHER_SANS, f"SANs other than the SPIFFE ID are refused: {', '.join(kinds)}")
    try:
        return Identity.parse(uris[0])
    except IdentityError as e:
        raise CsrError(Reason.NOT_SPIFFE, str(e)) from None
