"""The CA's certificates as OpenSSL sees them (issue 3's acceptance checks).

`openssl verify -CAfile root.pem -untrusted chain.pem leaf.pem` must succeed in self-signed mode
and with a plugged-in intermediate under an external root, and `openssl x509 -text` must show
the SPIFFE URI SAN marked critical, an ECDSA P-256 key, issuer O=cluster.local and the
requested lifetime. Runs the real `openssl` binary; skipped where it is missing (failed instead
when CI lists it in MESH_REQUIRE).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from services.ca.authority import issue, make_root
from services.ca.csr_checks import check_csr
from services.ca.keystore import KeyStore
from tests.harness import need
from tests.unit.ca.test_authority import make_intermediate
from tests.unit.ca.test_csr_checks import csr_pem

pytestmark = pytest.mark.integration

TD = "cluster.local"
URI = "spiffe://cluster.local/ns/default/sa/sleep"
TTL = 3600


@pytest.fixture(autouse=True)
def _openssl() -> None:
    need("openssl", shutil.which("openssl") is not None, "the openssl CLI is not on PATH")


def openssl(*args: str | Path) -> str:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"openssl {' '.join(map(str, args))} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def write_files(directory: Path, bundle: list[str], chain: list[str]) -> tuple[Path, Path, Path]:
    """root.pem (what peers trust), chain.pem (everything after the leaf), leaf.pem."""
    root, untrusted, leaf = directory / "root.pem", directory / "chain.pem", directory / "leaf.pem"
    root.write_text("".join(bundle))
    untrusted.write_text("".join(chain[1:]))
    leaf.write_text(chain[0])
    return root, untrusted, leaf


def verify(root: Path, untrusted: Path, leaf: Path, *extra: str) -> None:
    out = openssl("verify", *extra, "-CAfile", root, "-untrusted", untrusted, leaf)
    assert out.strip() == f"{leaf}: OK"


def openssl_time(text: str, field: str) -> dt.datetime:
    (value,) = re.findall(rf"{field}\s*:\s*(.+? GMT)", text)
    return dt.datetime.strptime(value, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=dt.UTC)


def test_self_signed_mode(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    store = KeyStore.open(tmp_path / "state", TD, now=now)
    chain = issue(store.signing(now), check_csr(csr_pem(), TD), TTL, now)
    assert len(chain) == 2
    root, untrusted, leaf = write_files(tmp_path, store.trust_bundle(now), chain)

    verify(root, untrusted, leaf)
    verify(root, untrusted, leaf, "-x509_strict")  # RFC 5280 profile checks (AKI, SKI, ...)
    verify(root, untrusted, leaf, "-purpose", "sslclient")  # EKU clientAuth
    verify(root, untrusted, leaf, "-purpose", "sslserver")  # EKU serverAuth

    text = openssl("x509", "-in", leaf, "-text", "-noout")
    assert re.search(r"X509v3 Subject Alternative Name: critical\s*\n\s*URI:" + re.escape(URI) + r"\s*\n", text)
    assert "ASN1 OID: prime256v1" in text
    assert "NIST CURVE: P-256" in text
    assert re.search(r"^\s*Issuer: O = cluster.local\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*Subject:\s*$", text, re.MULTILINE)  # empty subject
    assert "ecdsa-with-SHA256" in text
    assert re.search(r"X509v3 Basic Constraints: critical\s*\n\s*CA:FALSE", text)
    assert re.search(r"X509v3 Key Usage: critical\s*\n\s*Digital Signature, Key Encipherment", text)
    assert re.search(r"X509v3 Extended Key Usage:\s*\n\s*TLS Web Server Authentication, TLS Web Client", text)
    # The requested lifetime, plus the one minute NotBefore is backdated for clock skew.
    not_before, not_after = openssl_time(text, "Not Before"), openssl_time(text, "Not After")
    assert not_after - now == dt.timedelta(seconds=TTL)
    assert not_after - not_before == dt.timedelta(seconds=TTL, minutes=1)


def test_self_signed_mode_during_rotation(tmp_path: Path) -> None:
    """With both roots in the bundle, leaves of either verify against the one root.pem."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    store = KeyStore.open(tmp_path / "state", TD, now=now - dt.timedelta(hours=2))
    store.rotate(now - dt.timedelta(hours=1), activate_after=dt.timedelta(hours=2))  # pending until now + 1h
    checked = check_csr(csr_pem(), TD)
    old_chain = issue(store.signing(now), checked, TTL, now)
    new_chain = issue(store.signing(now + dt.timedelta(hours=1)), checked, TTL, now)
    assert old_chain[1] != new_chain[1]
    bundle = tmp_path / "root-cert.pem"
    store.write_bundle(bundle, now)
    for name, chain in (("old", old_chain), ("new", new_chain)):
        directory = tmp_path / name
        directory.mkdir()
        _, untrusted, leaf = write_files(directory, [], chain)
        verify(bundle, untrusted, leaf, "-x509_strict")


def test_plugged_intermediate_up_to_an_external_root(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    external_root, external_key = make_root("example-corp root", now)
    intermediate, intermediate_key = make_intermediate(external_root, external_key, "mesh intermediate", now)
    cacerts = tmp_path / "cacerts"
    cacerts.mkdir()
    encoded = {c: c.public_bytes(serialization.Encoding.PEM) for c in (external_root, intermediate)}
    (cacerts / "ca-cert.pem").write_bytes(encoded[intermediate])
    (cacerts / "ca-key.pem").write_bytes(
        intermediate_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (cacerts / "root-cert.pem").write_bytes(encoded[external_root])
    (cacerts / "cert-chain.pem").write_bytes(encoded[intermediate] + encoded[external_root])

    store = KeyStore.open(tmp_path / "state", TD, cacerts_dir=cacerts, now=now)
    chain = issue(store.signing(now), check_csr(csr_pem(), TD), TTL, now)
    assert len(chain) == 3
    root, untrusted, leaf = write_files(tmp_path, store.trust_bundle(now), chain)
    assert root.read_bytes() == encoded[external_root]

    verify(root, untrusted, leaf)
    verify(root, untrusted, leaf, "-x509_strict", "-purpose", "sslclient")
    text = openssl("x509", "-in", leaf, "-text", "-noout")
    assert re.search(r"^\s*Issuer: O = mesh intermediate\s*$", text, re.MULTILINE)
    assert re.search(r"X509v3 Subject Alternative Name: critical\s*\n\s*URI:" + re.escape(URI), text)
    assert "ASN1 OID: prime256v1" in text


def test_a_foreign_root_does_not_verify(tmp_path: Path) -> None:
    """The checks above are not vacuous: the same leaf fails against an unrelated root."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    store = KeyStore.open(tmp_path / "state", TD, now=now)
    chain = issue(store.signing(now), check_csr(csr_pem(), TD), TTL, now)
    other, _ = make_root(TD, now)
    root, untrusted, leaf = write_files(tmp_path, [other.public_bytes(serialization.Encoding.PEM).decode()], chain)
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(root), "-untrusted", str(untrusted), str(leaf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
