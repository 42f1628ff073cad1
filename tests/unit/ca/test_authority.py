"""Unit tests for services.ca.authority: every property of an issued leaf, read back from its PEM.

Besides field-by-field checks, each chain is run through `cryptography`'s RFC 5280 path
validator (the same policy family as rustls/webpki, which ztunnel uses).
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.identity import Identity
from services.ca.authority import AuthorityError, SigningCA, issue, make_root
from services.ca.csr_checks import CheckedCSR, check_csr
from tests.unit.ca.test_csr_checks import csr_pem, private_key

pytestmark = pytest.mark.unit

TD = "cluster.local"
NOW = dt.datetime(2030, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
DAY = 86400


def make_intermediate(
    parent: x509.Certificate,
    parent_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    name: str,
    now: dt.datetime,
    *,
    days: int = 365,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    ca: bool = True,
    key_cert_sign: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]:
    """A certificate for `name` issued by `parent`: an intermediate CA unless `ca` is False."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(True, False, False, False, False, key_cert_sign, key_cert_sign, False, False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)]))
        .issuer_name(parent.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(parent_key.public_key()), critical=False)
        .sign(parent_key, hashes.SHA256())
    )
    return cert, key


def load(chain: list[str]) -> list[x509.Certificate]:
    """Parse Istio's cert_chain, checking there is exactly one certificate per element."""
    certs = []
    for pem in chain:
        assert pem.count("-----BEGIN CERTIFICATE-----") == 1
        certs.append(x509.load_pem_x509_certificate(pem.encode()))
    return certs


def path_validates(leaf: x509.Certificate, root: x509.Certificate, intermediates: list[x509.Certificate]) -> str:
    """Validate leaf up to root as a client certificate; return the SPIFFE URI it proves."""
    verifier = verification.PolicyBuilder().store(verification.Store([root])).time(NOW).build_client_verifier()
    verified = verifier.verify(leaf, intermediates)
    (uri,) = verified.subjects
    return uri.value


@pytest.fixture(scope="module")
def root() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return make_root(TD, NOW)


@pytest.fixture(scope="module")
def ca(root: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> SigningCA:
    return SigningCA(*root)


@pytest.fixture(scope="module")
def checked() -> CheckedCSR:
    return check_csr(csr_pem(), TD)


@pytest.fixture(scope="module")
def leaf(ca: SigningCA, checked: CheckedCSR) -> x509.Certificate:
    return load(issue(ca, checked, 3600, NOW))[0]


# --- the leaf, property by property ---------------------------------------------------------------


def test_san_is_the_identity_and_critical(leaf: x509.Certificate) -> None:
    ext = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ext.critical
    assert list(ext.value) == [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/sleep")]


def test_subject_is_empty(leaf: x509.Certificate) -> None:
    assert len(leaf.subject) == 0
    assert leaf.subject.public_bytes() == b"\x30\x00"  # an empty SEQUENCE, as Istio's leaves


def test_issuer_is_the_root_subject(leaf: x509.Certificate, root) -> None:
    assert leaf.issuer == root[0].subject
    assert leaf.issuer.rfc4514_string() == "O=cluster.local"


def test_serial_is_positive_random_128_bit(ca: SigningCA, checked: CheckedCSR) -> None:
    serials = {load(issue(ca, checked, 3600, NOW))[0].serial_number for _ in range(50)}
    assert len(serials) == 50
    assert all(0 < s < 2**128 for s in serials)
    assert max(serials).bit_length() > 120  # drawn from 128 bits, not a small counter


def test_validity_is_backdated_one_minute_and_lasts_ttl(leaf: x509.Certificate) -> None:
    assert leaf.not_valid_before_utc == NOW - dt.timedelta(minutes=1)
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(seconds=3600)


def test_key_usage(leaf: x509.Certificate) -> None:
    ext = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ext.critical
    usage = ext.value
    assert usage.digital_signature and usage.key_encipherment
    assert not (usage.content_commitment or usage.data_encipherment or usage.key_agreement)
    assert not (usage.key_cert_sign or usage.crl_sign)


def test_extended_key_usage(leaf: x509.Certificate) -> None:
    ext = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(ext.value) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def test_basic_constraints_not_a_ca(leaf: x509.Certificate) -> None:
    ext = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ext.critical
    assert ext.value.ca is False


def test_key_identifiers(leaf: x509.Certificate, root, checked: CheckedCSR) -> None:
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(checked.public_key)


def test_exactly_these_extensions(leaf: x509.Certificate) -> None:
    assert {e.oid for e in leaf.extensions} == {
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    }


def test_signed_with_sha256_by_the_ca(leaf: x509.Certificate, root, checked: CheckedCSR) -> None:
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    leaf.verify_directly_issued_by(root[0])
    assert leaf.public_key() == checked.public_key
    assert leaf.version is x509.Version.v3


def test_passes_rfc5280_path_validation(leaf: x509.Certificate, root) -> None:
    assert path_validates(leaf, root[0], []) == "spiffe://cluster.local/ns/default/sa/sleep"


def test_requested_ca_extension_is_not_copied(ca: SigningCA) -> None:
    pem = csr_pem(extra=(x509.BasicConstraints(ca=True, path_length=None),))
    leaf = load(issue(ca, check_csr(pem, TD), 3600, NOW))[0]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa2048"])
def test_leaf_carries_the_requested_key(ca: SigningCA, kind: str) -> None:
    key = private_key(kind)
    leaf = load(issue(ca, check_csr(csr_pem(key), TD), 3600, NOW))[0]
    assert leaf.public_key() == key.public_key()
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)  # the CA's key decides


# --- the chain ------------------------------------------------------------------------------------


def test_self_signed_chain_is_leaf_then_root(ca: SigningCA, root, checked: CheckedCSR) -> None:
    chain = issue(ca, checked, 3600, NOW)
    certs = load(chain)
    assert len(certs) == 2
    assert certs[1] == root[0]
    assert all(pem.endswith("-----END CERTIFICATE-----\n") for pem in chain)


def test_intermediate_chain_order(root, checked: CheckedCSR) -> None:
    inter1, key1 = make_intermediate(*root, "intermediate-1", NOW)
    inter2, key2 = make_intermediate(inter1, key1, "intermediate-2", NOW)
    ca = SigningCA(inter2, key2, (inter1, root[0]))
    certs = load(issue(ca, checked, 3600, NOW))
    assert certs[1:] == [inter2, inter1, root[0]]
    assert certs[0].issuer == inter2.subject
    aki = certs[0].extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == x509.SubjectKeyIdentifier.from_public_key(key2.public_key()).digest
    for child, parent in itertools.pairwise(certs):
        child.verify_directly_issued_by(parent)
    assert path_validates(certs[0], root[0], [inter2, inter1]).endswith("/sa/sleep")


def test_aki_copies_an_unusual_ca_key_identifier(root, checked: CheckedCSR) -> None:
    """A plugged-in CA whose SKI is not SHA-1 of its key: the leaf's AKI must still match it."""
    key = ec.generate_private_key(ec.SECP256R1())
    odd_ski = x509.SubjectKeyIdentifier(bytes(range(8)))  # RFC 5280 §4.2.1.2 allows other methods
    inter = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "odd-ski")]))
        .issuer_name(root[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(odd_ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root[1].public_key()), critical=False)
        .sign(root[1], hashes.SHA256())
    )
    leaf = load(issue(SigningCA(inter, key, (root[0],)), checked, 3600, NOW))[0]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == odd_ski.digest
    assert path_validates(leaf, root[0], [inter]).endswith("/sa/sleep")


def test_rsa_intermediate_signs_with_sha256(root, checked: CheckedCSR) -> None:
    inter, key = make_intermediate(*root, "rsa-intermediate", NOW, key=private_key("rsa2048"))
    leaf = load(issue(SigningCA(inter, key, (root[0],)), checked, 3600, NOW))[0]
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    leaf.verify_directly_issued_by(inter)


# --- lifetimes and refusals -----------------------------------------------------------------------


def test_lifetime_clamped_to_the_ca_expiry(root, checked: CheckedCSR) -> None:
    inter, key = make_intermediate(*root, "short-lived", NOW - dt.timedelta(days=1), days=1)
    ca = SigningCA(inter, key, (root[0],))
    later = inter.not_valid_after_utc - dt.timedelta(hours=2)
    leaf = load(issue(ca, checked, DAY, later))[0]
    assert leaf.not_valid_after_utc == inter.not_valid_after_utc
    assert leaf.not_valid_before_utc == later - dt.timedelta(minutes=1)


def test_expired_ca_refuses(root, checked: CheckedCSR) -> None:
    ca = SigningCA(*root)
    with pytest.raises(AuthorityError, match="expired"):
        issue(ca, checked, 3600, root[0].not_valid_after_utc)


@pytest.mark.parametrize("ttl", [0, -1])
def test_non_positive_ttl_refused(ca: SigningCA, checked: CheckedCSR, ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        issue(ca, checked, ttl, NOW)


def test_naive_time_refused(ca: SigningCA, checked: CheckedCSR) -> None:
    with pytest.raises(ValueError, match="timezone"):
        issue(ca, checked, 3600, NOW.replace(tzinfo=None))


def test_signing_ca_refuses_a_mismatched_key(root) -> None:
    with pytest.raises(AuthorityError, match="does not match"):
        SigningCA(root[0], ec.generate_private_key(ec.SECP256R1()))


def test_signing_ca_refuses_a_non_ca_certificate(root) -> None:
    cert, key = make_intermediate(*root, "not-a-ca", NOW, ca=False)
    with pytest.raises(AuthorityError, match="not a CA"):
        SigningCA(cert, key, (root[0],))


def test_signing_ca_refuses_unsupported_key_types(root) -> None:
    with pytest.raises(AuthorityError, match="Ed25519"):
        SigningCA(root[0], ed25519.Ed25519PrivateKey.generate())  # type: ignore[arg-type]


# --- make_root ------------------------------------------------------------------------------------


def test_make_root(root) -> None:
    cert, key = root
    assert cert.subject.rfc4514_string() == "O=cluster.local"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key() == key.public_key()
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert cert.not_valid_before_utc < NOW - dt.timedelta(minutes=1)  # predates its first leaves
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=3650)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert 0 < cert.serial_number < 2**128


def test_make_root_days_and_trust_domain() -> None:
    cert, _ = make_root("example.org", NOW, days=30)
    assert cert.subject.rfc4514_string() == "O=example.org"
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=30)


def test_two_roots_of_one_trust_domain_are_told_apart(checked: CheckedCSR) -> None:
    """Rotated roots share their subject; AKI/SKI let a verifier pick the right one."""
    old, new = make_root(TD, NOW), make_root(TD, NOW)
    assert old[0].subject == new[0].subject
    leaf = load(issue(SigningCA(*new), checked, 3600, NOW))[0]
    verifier = (
        verification.PolicyBuilder().store(verification.Store([old[0], new[0]])).time(NOW).build_client_verifier()
    )
    assert verifier.verify(leaf, []).chain[-1] == new[0]


# --- every identity -------------------------------------------------------------------------------

_labels = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?\Z")
_subdomains = st.lists(_labels, min_size=1, max_size=3).map(".".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(td=_subdomains, ns=_labels, sa=_subdomains, ttl=st.integers(min_value=1, max_value=30 * DAY))
def test_any_identity_round_trips_through_a_certificate(td: str, ns: str, sa: str, ttl: int) -> None:
    identity = Identity(td, ns, sa)
    root_cert, root_key = _root_for(td)
    checked = check_csr(csr_pem(sans=[x509.UniformResourceIdentifier(str(identity))]), td)
    assert checked.identity == identity
    leaf = load(issue(SigningCA(root_cert, root_key), checked, ttl, NOW))[0]
    (uri,) = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert Identity.parse(uri.value) == identity
    assert leaf.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == td
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(seconds=ttl, minutes=1)
    assert path_validates(leaf, root_cert, []) == str(identity)


_roots: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}


def _root_for(td: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if td not in _roots:
        _roots[td] = make_root(td, NOW)
    return _roots[td]
