"""Unit tests for services.ca.csr_checks: every kind of bad CSR refused with its own reason.

CSRs are built here with `cryptography`; the few it will not produce (a SHA-1 signature, a
tampered signature) are assembled from DER by hand.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID, ObjectIdentifier
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mesh.identity import Identity
from services.ca import csr_checks
from services.ca.csr_checks import CheckedCSR, CsrError, Reason, check_csr, clamp_validity

pytestmark = pytest.mark.unit

TD = "cluster.local"
URI = "spiffe://cluster.local/ns/default/sa/sleep"


@functools.cache
def private_key(kind: str):  # one of several key types
    """A key of `kind`, made once per test session (RSA generation is slow)."""
    makers = {
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
        "p224": lambda: ec.generate_private_key(ec.SECP224R1()),
        "p192": lambda: ec.generate_private_key(ec.SECP192R1()),
        "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
        "brainpool": lambda: ec.generate_private_key(ec.BrainpoolP256R1()),
        "rsa1024": lambda: rsa.generate_private_key(65537, 1024),
        "rsa2048": lambda: rsa.generate_private_key(65537, 2048),
        "rsa3072": lambda: rsa.generate_private_key(65537, 3072),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "ed448": ed448.Ed448PrivateKey.generate,
        "dsa": lambda: dsa.generate_private_key(2048),
    }
    return makers[kind]()


def csr_pem(
    key=None,
    sans: list[x509.GeneralName] | None = None,
    *,
    algorithm: hashes.HashAlgorithm | None = None,
    san_critical: bool = False,
    subject: x509.Name | None = None,
    extra: tuple[x509.ExtensionType, ...] = (),
) -> bytes:
    """A PEM CSR; by default a P-256, SHA-256 request for URI with only that SAN."""
    key = key if key is not None else private_key("p256")
    sans = [x509.UniformResourceIdentifier(URI)] if sans is None else sans
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or x509.Name([]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=san_critical)
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    if algorithm is None and not isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        algorithm = hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


# --- hand-made DER, for what the builder refuses to produce -------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = (n.bit_length() + 7) // 8  # X.690 §8.1.3.5: long form, big-endian length octets
    return bytes([tag, 0x80 | size]) + n.to_bytes(size) + body


def _to_pem(der: bytes) -> bytes:
    return x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)


ECDSA_WITH_SHA1 = _der(0x30, bytes.fromhex("06072a8648ce3d0401"))  # OID 1.2.840.10045.4.1
ECDSA_WITH_SHA256 = _der(0x30, bytes.fromhex("06082a8648ce3d040302"))  # OID 1.2.840.10045.4.3.2


def signed(tbs: bytes, algorithm: hashes.HashAlgorithm, algorithm_id: bytes) -> bytes:
    """A PEM CSR from hand-made CertificationRequestInfo bytes, signed by the P-256 test key."""
    signature = private_key("p256").sign(tbs, ec.ECDSA(algorithm))
    return _to_pem(_der(0x30, tbs + algorithm_id + _der(0x03, b"\x00" + signature)))


def sha1_csr_pem() -> bytes:
    """A P-256 CSR signed with ecdsa-with-SHA1, which `cryptography` will no longer sign."""
    tbs = x509.load_pem_x509_csr(csr_pem()).tbs_certrequest_bytes
    return signed(tbs, hashes.SHA1(), ECDSA_WITH_SHA1)  # SHA-1: the point of the test


def x400_san_pem() -> bytes:
    """A SAN holding the URI and an x400Address, a GeneralName `cryptography` cannot represent."""
    value = _der(0x30, _der(0x86, URI.encode()) + _der(0xA3, b""))
    san = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, value)
    return csr_pem(sans=[], extra=(san,))


def duplicate_san_pem() -> bytes:
    """Two subjectAltName extensions (RFC 5280 §4.2 allows one), which the builder will not make:
    the second is added under a stand-in OID of the same length, then renamed in the DER."""
    stand_in, san_oid = bytes.fromhex("0603551d63"), bytes.fromhex("0603551d11")  # 2.5.29.99, 2.5.29.17
    second = x509.UnrecognizedExtension(ObjectIdentifier("2.5.29.99"), _der(0x30, _der(0x86, URI.encode())))
    tbs = x509.load_pem_x509_csr(csr_pem(extra=(second,))).tbs_certrequest_bytes
    return signed(tbs.replace(stand_in, san_oid), hashes.SHA256(), ECDSA_WITH_SHA256)


def tampered_pem() -> bytes:
    """A valid CSR whose signature's last byte is flipped: still DER, no longer verifying."""
    der = x509.load_pem_x509_csr(csr_pem()).public_bytes(serialization.Encoding.DER)
    return _to_pem(der[:-1] + bytes([der[-1] ^ 0x01]))


def self_signed_cert_pem() -> bytes:
    key = private_key("p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(URI)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


# --- the table of bad requests ------------------------------------------------------------------

_uri = x509.UniformResourceIdentifier
_good = csr_pem  # shorthand inside the table

BAD_CSRS = {
    # size and framing
    "oversized": (lambda: _good() + b"\n" * (64 * 1024), Reason.OVERSIZED),
    "empty": (lambda: b"", Reason.MALFORMED),
    "whitespace only": (lambda: b"  \n", Reason.MALFORMED),
    "garbage text": (lambda: b"hello, CA", Reason.MALFORMED),
    "garbage inside the PEM": (
        lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY3Ny\n-----END CERTIFICATE REQUEST-----\n",
        Reason.MALFORMED,
    ),
    "truncated PEM": (lambda: _good()[:200], Reason.MALFORMED),
    "two CSRs in one PEM": (lambda: _good() + _good(), Reason.MALFORMED),
    "text before the block": (lambda: b"subject=foo\n" + _good(), Reason.MALFORMED),
    "text after the block": (lambda: _good() + b"trailing", Reason.MALFORMED),
    "DER instead of PEM": (
        lambda: x509.load_pem_x509_csr(_good()).public_bytes(serialization.Encoding.DER),
        Reason.MALFORMED,
    ),
    "a certificate instead of a CSR": (self_signed_cert_pem, Reason.MALFORMED),
    "a private key instead of a CSR": (
        lambda: private_key("p256").private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        Reason.MALFORMED,
    ),
    # keys
    "RSA 1024": (lambda: _good(private_key("rsa1024")), Reason.WEAK_KEY),
    "P-192": (lambda: _good(private_key("p192")), Reason.WEAK_KEY),
    "P-224": (lambda: _good(private_key("p224")), Reason.WEAK_KEY),
    "secp256k1": (lambda: _good(private_key("secp256k1")), Reason.WEAK_KEY),
    "brainpoolP256r1": (lambda: _good(private_key("brainpool")), Reason.WEAK_KEY),
    "P-521": (lambda: _good(private_key("p521"), algorithm=hashes.SHA512()), Reason.WEAK_KEY),
    "Ed25519": (lambda: _good(private_key("ed25519")), Reason.WEAK_KEY),
    "Ed448": (lambda: _good(private_key("ed448")), Reason.WEAK_KEY),
    "DSA": (lambda: _good(private_key("dsa")), Reason.WEAK_KEY),
    # signatures
    "SHA-1 signature": (sha1_csr_pem, Reason.WEAK_SIGNATURE),
    "SHA-224 signature": (lambda: _good(algorithm=hashes.SHA224()), Reason.WEAK_SIGNATURE),
    "SHA3-256 signature": (lambda: _good(algorithm=hashes.SHA3_256()), Reason.WEAK_SIGNATURE),
    "tampered signature": (tampered_pem, Reason.BAD_SIGNATURE),
    # subject alternative names
    "no SAN extension": (lambda: _good(sans=[]), Reason.NO_SAN),
    "only a DNS SAN": (lambda: _good(sans=[x509.DNSName("sleep.default.svc")]), Reason.NO_SAN),
    "two URI SANs": (
        lambda: _good(sans=[_uri(URI), _uri("spiffe://cluster.local/ns/default/sa/other")]),
        Reason.SEVERAL_SANS,
    ),
    "the same URI twice": (lambda: _good(sans=[_uri(URI), _uri(URI)]), Reason.SEVERAL_SANS),
    "URI and DNS SANs": (lambda: _good(sans=[_uri(URI), x509.DNSName("sleep")]), Reason.OTHER_SANS),
    "URI and IP SANs": (
        lambda: _good(sans=[_uri(URI), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]),
        Reason.OTHER_SANS,
    ),
    "URI and email SANs": (lambda: _good(sans=[_uri(URI), x509.RFC822Name("a@b.c")]), Reason.OTHER_SANS),
    "URI and otherName SANs": (
        lambda: _good(sans=[_uri(URI), x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x01a")]),
        Reason.OTHER_SANS,
    ),
    "URI and x400Address SANs": (x400_san_pem, Reason.OTHER_SANS),
    "two SAN extensions": (duplicate_san_pem, Reason.MALFORMED),
    "non-SPIFFE URI": (lambda: _good(sans=[_uri("https://cluster.local/ns/a/sa/b")]), Reason.NOT_SPIFFE),
    "SPIFFE path not /ns/x/sa/y": (lambda: _good(sans=[_uri("spiffe://cluster.local/workload/a")]), Reason.NOT_SPIFFE),
    "SPIFFE path too long": (
        lambda: _good(sans=[_uri("spiffe://cluster.local/ns/a/sa/b/extra")]),
        Reason.NOT_SPIFFE,
    ),
    "SPIFFE with uppercase namespace": (
        lambda: _good(sans=[_uri("spiffe://cluster.local/ns/Default/sa/b")]),
        Reason.NOT_SPIFFE,
    ),
    "foreign trust domain": (
        lambda: _good(sans=[_uri("spiffe://example.org/ns/default/sa/sleep")]),
        Reason.FOREIGN_TRUST_DOMAIN,
    ),
    "trust domain suffix of ours": (
        lambda: _good(sans=[_uri("spiffe://evil.cluster.local/ns/default/sa/sleep")]),
        Reason.FOREIGN_TRUST_DOMAIN,
    ),
}


@pytest.mark.parametrize("case", list(BAD_CSRS))
def test_bad_csr_refused_with_its_reason(case: str) -> None:
    make, reason = BAD_CSRS[case]
    with pytest.raises(CsrError) as caught:
        check_csr(make(), TD)
    assert caught.value.reason == reason, caught.value.detail
    assert caught.value.detail
    assert str(caught.value).startswith(f"{reason}: ")


def test_table_covers_every_reason_and_enough_cases() -> None:
    assert len(BAD_CSRS) >= 15
    assert {reason for _, reason in BAD_CSRS.values()} == set(Reason)


def test_reason_codes_are_the_documented_strings() -> None:
    assert [str(r) for r in Reason] == [
        "oversized",
        "malformed",
        "bad-signature",
        "weak-signature",
        "weak-key",
        "no-san",
        "several-sans",
        "other-sans",
        "not-spiffe",
        "foreign-trust-domain",
    ]


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [
        ("p256", hashes.SHA256()),
        ("p256", hashes.SHA384()),
        ("p384", hashes.SHA384()),
        ("p384", hashes.SHA512()),
        ("rsa2048", hashes.SHA256()),
        ("rsa3072", hashes.SHA512()),
    ],
)
def test_good_csr_accepted(kind: str, algorithm: hashes.HashAlgorithm) -> None:
    key = private_key(kind)
    checked = check_csr(csr_pem(key, algorithm=algorithm), TD)
    assert isinstance(checked, CheckedCSR)
    assert checked.identity == Identity("cluster.local", "default", "sleep")
    assert checked.public_key == key.public_key()
    assert checked.csr.is_signature_valid


def test_str_and_bytes_both_accepted() -> None:
    pem = csr_pem()
    assert check_csr(pem, TD).identity == check_csr(pem.decode(), TD).identity


def test_critical_san_and_a_subject_are_fine() -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sleep")])
    assert check_csr(csr_pem(san_critical=True, subject=subject), TD).identity.service_account == "sleep"


def test_requested_extensions_are_ignored_not_refused() -> None:
    """The CA builds the leaf itself, so asking for CA:true gets nothing and is no error."""
    pem = csr_pem(extra=(x509.BasicConstraints(ca=True, path_length=None),))
    assert check_csr(pem, TD).identity.namespace == "default"


def test_other_trust_domain_when_configured() -> None:
    pem = csr_pem(sans=[_uri("spiffe://example.org/ns/a/sa/b")])
    assert check_csr(pem, "example.org").identity.trust_domain == "example.org"
    with pytest.raises(CsrError) as caught:
        check_csr(csr_pem(), "example.org")
    assert caught.value.reason is Reason.FOREIGN_TRUST_DOMAIN


def test_size_limit_is_inclusive_and_configurable() -> None:
    pem = csr_pem()
    assert check_csr(pem, TD, max_bytes=len(pem)).identity
    with pytest.raises(CsrError) as caught:
        check_csr(pem, TD, max_bytes=len(pem) - 1)
    assert caught.value.reason is Reason.OVERSIZED


def test_rsa_above_the_ceiling_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Generating a 9000-bit key takes seconds; lowering the ceiling tests the same branch.
    monkeypatch.setattr(csr_checks, "MAX_RSA_BITS", 2048)
    with pytest.raises(CsrError) as caught:
        check_csr(csr_pem(private_key("rsa3072")), TD)
    assert caught.value.reason is Reason.WEAK_KEY


def test_legacy_new_certificate_request_label_accepted() -> None:
    pem = csr_pem().replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
    assert check_csr(pem, TD).identity.service_account == "sleep"


def test_crlf_line_endings_accepted() -> None:
    assert check_csr(csr_pem().replace(b"\n", b"\r\n"), TD).identity.service_account == "sleep"


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (0, 86400),  # proto3 default: no preference
        (-5, 86400),
        (1, 600),  # floored
        (599, 600),
        (600, 600),
        (3600, 3600),
        (86400, 86400),
        (86401, 86400),  # capped
        (10**12, 86400),
    ],
)
def test_clamp_validity_defaults(requested: int, expected: int) -> None:
    assert clamp_validity(requested) == expected


@pytest.mark.parametrize(
    ("requested", "kwargs", "expected"),
    [
        (0, {"default": 3600}, 3600),
        (0, {"default": 10, "minimum": 60}, 60),  # the default is held to the bounds too
        (7200, {"maximum": 3600}, 3600),
        (30, {"minimum": 60}, 60),
        (90, {"minimum": 60, "maximum": 120}, 90),
    ],
)
def test_clamp_validity_custom(requested: int, kwargs: dict[str, int], expected: int) -> None:
    assert clamp_validity(requested, **kwargs) == expected


def test_clamp_validity_refuses_inverted_bounds() -> None:
    with pytest.raises(ValueError, match="minimum"):
        clamp_validity(100, minimum=200, maximum=100)


# --- nothing but CsrError escapes -----------------------------------------------------------------

_GOOD_DER = x509.load_pem_x509_csr(csr_pem()).public_bytes(serialization.Encoding.DER)
_VERSION_AT = _GOOD_DER.index(b"\x02\x01\x00") + 2  # CertificationRequestInfo.version, v1 = 0


@settings(max_examples=300, deadline=None)
@example(position=_VERSION_AT, flip=1)  # found by Hypothesis: InvalidVersion is no ValueError
@given(position=st.integers(min_value=0, max_value=len(_GOOD_DER) - 1), flip=st.integers(min_value=1, max_value=255))
def test_any_corrupted_byte_is_refused_cleanly(position: int, flip: int) -> None:
    """One altered byte anywhere in the DER is a CsrError (of some reason), never a crash."""
    der = bytearray(_GOOD_DER)
    der[position] ^= flip
    body = base64.encodebytes(bytes(der))
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + body + b"-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(CsrError):
        check_csr(pem, TD)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=3000), st.text(max_size=3000)))
def test_arbitrary_input_is_refused_cleanly(data: bytes | str) -> None:
    with pytest.raises(CsrError):
        check_csr(data, TD)


def test_a_signature_claiming_padding_bits_is_refused() -> None:
    """The parser accepts a signature BIT STRING whose unused-bits octet says 1 when the last
    octet is even (found by Hypothesis above): one request, two encodings. The CA refuses it."""
    while True:  # half of all ECDSA signatures end in an even octet
        der = bytearray(x509.load_pem_x509_csr(csr_pem()).public_bytes(serialization.Encoding.DER))
        if der[-1] % 2 == 0:
            break
    # The signature BIT STRING is the request's last element: tag 03, a length reaching the end.
    tag = next(k for k in range(len(der) - 80, len(der)) if der[k] == 3 and der[k + 1] == len(der) - k - 2)
    unused_bits_at = tag + 2
    assert der[unused_bits_at] == 0
    der[unused_bits_at] = 1
    pem = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(bytes(der))
        + b"-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(CsrError) as refused:
        check_csr(pem, TD)
    assert refused.value.reason is Reason.MALFORMED and "whole number of octets" in str(refused.value)
