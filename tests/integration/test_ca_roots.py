"""mesh-ca's roots end to end: a plugged-in intermediate under an external root, and rotation."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.certs.ca_client import CaClient
from mesh.certs.csr import make_csr
from mesh.identity import Identity
from tests import harness

pytestmark = pytest.mark.integration

SLEEP = Identity("cluster.local", "default", "sleep")


def _ca_cert(subject: str, key, issuer_cert, issuer_key, path_length: int | None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _setup(istiod: harness.Istiod) -> str:
    token = harness.create_node(istiod, "node-1")
    with istiod.client() as client:
        client.post(
            "/api/v1/namespaces/default/pods",
            json={
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "sleep"},
                "spec": {"serviceAccountName": "sleep", "nodeName": "node-1", "containers": [{"name": "c"}]},
            },
        )
    return token


def _request(ca: harness.MeshCa, token: str, roots: bytes) -> list[str]:
    async def call() -> list[str]:
        async with CaClient(ca.address, roots, token) as client:
            return await client.create_certificate(make_csr(SLEEP).csr_pem, 3600, str(SLEEP))

    return asyncio.run(call())


def test_plugged_in_intermediate_chains_to_the_external_root(tmp_path: Path) -> None:
    harness.need("openssl", shutil.which("openssl") is not None)
    root_key, mid_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _ca_cert("Example Corp Root", root_key, None, root_key, None)
    mid = _ca_cert("cluster.local", mid_key, root, root_key, 0)
    cacerts = tmp_path / "cacerts"
    cacerts.mkdir()
    (cacerts / "root-cert.pem").write_bytes(_pem(root))
    (cacerts / "ca-cert.pem").write_bytes(_pem(mid))
    (cacerts / "cert-chain.pem").write_bytes(_pem(mid) + _pem(root))
    key_file = cacerts / "ca-key.pem"
    key_file.write_bytes(
        mid_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    with (
        harness.running_istiod(tmp_path, "sqlite") as istiod,
        harness.running_ca(istiod, ["--cacerts", str(cacerts)]) as ca,
    ):
        assert ca.roots_pem.strip() == _pem(root).strip()
        chain = _request(ca, _setup(istiod), ca.roots_pem)
        assert len(chain) == 3  # leaf, the plugged intermediate, the external root
        (tmp_path / "leaf.pem").write_text(chain[0])
        (tmp_path / "chain.pem").write_text(chain[1])
        (tmp_path / "root.pem").write_bytes(_pem(root))
        verify = subprocess.run(
            ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "chain.pem", "leaf.pem"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        assert leaf.issuer == mid.subject


def test_a_rotated_root_is_trusted_before_it_signs_and_the_old_one_after(tmp_path: Path) -> None:
    with (
        harness.running_istiod(tmp_path, "sqlite") as istiod,
        harness.running_ca(istiod, ["--keystore-reload", "0.3"]) as ca,
    ):
        token = _setup(istiod)
        old_root = x509.load_pem_x509_certificate(ca.roots_pem)
        before = _request(ca, token, ca.roots_pem)
        rotate = subprocess.run(
            [
                str(harness.VENV_BIN / "mesh-ca"),
                "rotate-root",
                "--state-dir",
                str(ca.state_dir),
                "--activate-after",
                "4s",
            ],
            capture_output=True,
            text=True,
        )
        assert rotate.returncode == 0, rotate.stderr
        harness.wait_for(lambda: len(x509.load_pem_x509_certificates(ca.roots_pem)) == 2, 5, "the new root to join")
        both = ca.roots_pem
        during = _request(ca, token, both)
        assert x509.load_pem_x509_certificate(during[-1].encode()) == old_root  # still signed by the old root
        time.sleep(4.5)
        after = _request(ca, token, both)
        new_root = x509.load_pem_x509_certificate(after[-1].encode())
        assert new_root != old_root and new_root in x509.load_pem_x509_certificates(ca.roots_pem)
        assert old_root in x509.load_pem_x509_certificates(ca.roots_pem)  # certificates it signed still verify
        leaf = x509.load_pem_x509_certificate(after[0].encode())
        leaf.verify_directly_issued_by(new_root)
        x509.load_pem_x509_certificate(before[0].encode()).verify_directly_issued_by(old_root)
