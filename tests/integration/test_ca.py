"""mesh-ca end to end: real istiod, real mesh-ca over gRPC with TLS, real node tokens."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.certs.ca_client import CaClient, CaError
from mesh.certs.csr import make_csr
from mesh.identity import Identity
from services.ca.audit import read_audit
from tests import harness

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"
SLEEP = Identity("cluster.local", "default", "sleep")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[harness.Istiod, harness.MeshCa]]:
    tmp = tmp_path_factory.mktemp("ca")
    with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod) as ca:
        yield istiod, ca


@pytest.fixture(scope="module")
def tokens(mesh) -> dict[str, str]:
    istiod, _ = mesh
    return {name: harness.create_node(istiod, name) for name in ("node-1", "node-2")}


pod = harness.pod_body


def request(
    ca: harness.MeshCa,
    token: str,
    identity: Identity,
    csr_pem: str | None = None,
    impersonate: str | None = "same",
    ttl: int = 3600,
) -> list[str]:
    csr_pem = make_csr(identity).csr_pem if csr_pem is None else csr_pem
    target = str(identity) if impersonate == "same" else impersonate

    async def call() -> list[str]:
        async with CaClient(ca.address, ca.roots_pem, token) as client:
            return await client.create_certificate(csr_pem, ttl, target)

    return asyncio.run(call())


def refused(ca: harness.MeshCa, token: str, identity: Identity, **kw) -> str:
    with pytest.raises(CaError) as err:
        request(ca, token, identity, **kw)
    return err.value.code


def test_a_node_gets_certificates_only_for_its_own_pods(mesh, tokens) -> None:
    istiod, ca = mesh
    with istiod.client() as client:
        assert client.post(PODS, json=pod("sleep-a", "sleep", "node-1")).status_code == 201
        chain = request(ca, tokens["node-1"], SLEEP)
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [str(SLEEP)]
        assert refused(ca, tokens["node-2"], SLEEP) == "PERMISSION_DENIED"
        client.delete(f"{PODS}/sleep-a")
        deadline = time.monotonic() + 5
        while True:  # the watch event of the deletion reaches the CA's cache within moments
            try:
                request(ca, tokens["node-1"], SLEEP)
            except CaError as e:
                assert e.code == "PERMISSION_DENIED"
                break
            assert time.monotonic() < deadline, "node-1 still gets sleep certificates after the pod left"
            time.sleep(0.1)
        assert client.post(PODS, json=pod("sleep-b", "sleep", "node-2")).status_code == 201
        request(ca, tokens["node-2"], SLEEP)  # the pod moved: now node-2 may
        assert refused(ca, tokens["node-1"], SLEEP) == "PERMISSION_DENIED"
        finished = pod("sleep-done", "done", "node-1")
        client.post(PODS, json=finished)
        client.patch(
            f"{PODS}/sleep-done/status",
            json={"status": {"phase": "Succeeded"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        time.sleep(0.3)
        assert refused(ca, tokens["node-1"], Identity("cluster.local", "default", "done")) == "PERMISSION_DENIED"
        client.delete(f"{PODS}/sleep-b")
        client.delete(f"{PODS}/sleep-done")


def test_a_pod_created_a_moment_ago_is_not_refused(mesh, tokens) -> None:
    istiod, ca = mesh
    with istiod.client() as client:
        for i in range(5):
            identity = Identity("cluster.local", "default", f"fresh-{i}")
            client.post(PODS, json=pod(f"fresh-{i}", f"fresh-{i}", "node-1"))
            request(ca, tokens["node-1"], identity)  # immediately: a cache miss asks istiod
            client.delete(f"{PODS}/fresh-{i}")


def test_openssl_verifies_the_chain_and_shows_the_identity(mesh, tokens, tmp_path: Path) -> None:
    harness.need("openssl", shutil.which("openssl") is not None)
    istiod, ca = mesh
    with istiod.client() as client:
        client.post(PODS, json=pod("sleep-ssl", "sleep", "node-1"))
        chain = request(ca, tokens["node-1"], SLEEP, ttl=7200)
        client.delete(f"{PODS}/sleep-ssl")
    (tmp_path / "leaf.pem").write_text(chain[0])
    (tmp_path / "chain.pem").write_text("".join(chain[1:-1]) or chain[-1])
    (tmp_path / "root.pem").write_bytes(ca.roots_pem)
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "chain.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0 and "leaf.pem: OK" in verify.stdout, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", "leaf.pem", "-noout", "-text"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "X509v3 Subject Alternative Name: critical" in text
    assert f"URI:{SLEEP}" in text
    assert "prime256v1" in text and "Issuer: O = cluster.local" in text
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime.total_seconds() == 7200 + 60  # requested lifetime, NotBefore backdated a minute


def test_tokens_of_deleted_rotated_expired_forged_or_misaddressed_nodes_are_unauthenticated(
    mesh, tokens, tmp_path: Path
) -> None:
    istiod, ca = mesh
    with istiod.client() as client:
        client.post(PODS, json=pod("sleep-t", "sleep", "node-1"))
        doomed = harness.create_node(istiod, "node-doomed")
        client.post(PODS, json=pod("sleep-d", "sleep", "node-doomed"))
        request(ca, doomed, SLEEP)
        client.delete("/api/v1/nodes/node-doomed")
        assert refused(ca, doomed, SLEEP) == "UNAUTHENTICATED"

        rotating = harness.create_node(istiod, "node-rot")
        client.post(PODS, json=pod("sleep-r", "sleep", "node-rot"))
        fresh = client.post("/api/v1/nodes/node-rot/token").json()["status"]["token"]
        assert refused(ca, rotating, SLEEP) == "UNAUTHENTICATED"
        request(ca, fresh, SLEEP)

        key = serialization.load_pem_private_key((istiod.state_dir / "node-token-key.pem").read_bytes(), None)
        kid = jwt.get_unverified_header(tokens["node-1"])["kid"]
        claims = jwt.decode(tokens["node-1"], options={"verify_signature": False})
        expired = jwt.encode(
            {**claims, "exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
            key,
            algorithm="ES256",
            headers={"kid": kid},
        )
        assert refused(ca, expired, SLEEP) == "UNAUTHENTICATED"
        forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid})
        assert refused(ca, forged, SLEEP) == "UNAUTHENTICATED"
        wrong_aud = jwt.encode({**claims, "aud": ["somebody-else"]}, key, algorithm="ES256", headers={"kid": kid})
        assert refused(ca, wrong_aud, SLEEP) == "UNAUTHENTICATED"
        assert refused(ca, "not-a-token", SLEEP) == "UNAUTHENTICATED"
        assert refused(ca, istiod.token, SLEEP) == "UNAUTHENTICATED"  # the admin token is not a node token
        request(ca, tokens["node-1"], SLEEP)  # the real one still works
        for name in ("sleep-t", "sleep-d", "sleep-r"):
            client.delete(f"{PODS}/{name}")


def _csr(builder_key, sans: list[x509.GeneralName] | None, algorithm=None) -> str:
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if sans is not None:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=True)
    return b.sign(builder_key, algorithm or hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def bad_csrs(cert_pem: str) -> dict[str, str]:
    p256 = ec.generate_private_key(ec.SECP256R1())
    uri = x509.UniformResourceIdentifier
    good = make_csr(SLEEP).csr_pem
    tampered = bytearray(x509.load_pem_x509_csr(good.encode()).public_bytes(serialization.Encoding.DER))
    tampered[-5] ^= 0xFF
    tampered_pem = x509.load_der_x509_csr(bytes(tampered)).public_bytes(serialization.Encoding.PEM).decode()
    return {
        "garbage": "not a csr",
        "empty": "",
        "truncated PEM": good[: len(good) // 2],
        "two CSRs": good + good,
        "a certificate instead": cert_pem,
        "tampered signature": tampered_pem,
        "no SAN": _csr(p256, None),
        "DNS SAN only": _csr(p256, [x509.DNSName("sleep.default.svc")]),
        "URI and DNS SANs": _csr(p256, [uri(str(SLEEP)), x509.DNSName("x")]),
        "two URI SANs": _csr(p256, [uri(str(SLEEP)), uri("spiffe://cluster.local/ns/default/sa/other")]),
        "foreign trust domain": _csr(p256, [uri("spiffe://evil.example/ns/default/sa/sleep")]),
        "not spiffe": _csr(p256, [uri("https://cluster.local/ns/default/sa/sleep")]),
        "spiffe without sa": _csr(p256, [uri("spiffe://cluster.local/ns/default")]),
        "RSA 1024": _csr(rsa.generate_private_key(65537, 1024), [uri(str(SLEEP))]),
        "secp256k1 key": _csr(ec.generate_private_key(ec.SECP256K1()), [uri(str(SLEEP))]),
        "SHA-224 signature": _csr(rsa.generate_private_key(65537, 2048), [uri(str(SLEEP))], hashes.SHA224()),
        "oversized": good.replace("-----END", "\n" + "A" * 70000 + "\n-----END"),
    }


def test_bad_csrs_are_invalid_and_nothing_is_issued(mesh, tokens) -> None:
    istiod, ca = mesh
    with istiod.client() as client:
        client.post(PODS, json=pod("sleep-csr", "sleep", "node-1"))
        sample = request(ca, tokens["node-1"], SLEEP)[0]
        issued_before = sum(1 for e in read_audit(ca.audit_log) if e["decision"] == "issued")
        cases = bad_csrs(sample)
        assert len(cases) >= 15
        for name, pem in cases.items():
            assert refused(ca, tokens["node-1"], SLEEP, csr_pem=pem) == "INVALID_ARGUMENT", name
        mismatch = refused(ca, tokens["node-1"], SLEEP, impersonate="spiffe://cluster.local/ns/default/sa/other")
        assert mismatch == "INVALID_ARGUMENT"
        audit = read_audit(ca.audit_log)
        assert sum(1 for e in audit if e["decision"] == "issued") == issued_before
        assert sum(1 for e in audit[-len(cases) - 1 :] if e["decision"] == "invalid") == len(cases) + 1
        client.delete(f"{PODS}/sleep-csr")


def test_trust_bundle_metrics_and_tls(mesh, tokens) -> None:
    _, ca = mesh

    async def bundle(roots: bytes) -> list[str]:
        async with CaClient(ca.address, roots, tokens["node-1"]) as client:
            return await client.trust_bundle(timeout=3)

    roots = asyncio.run(bundle(ca.roots_pem))
    assert "".join(roots).strip() == ca.roots_pem.decode().strip()
    stranger = ec.generate_private_key(ec.SECP256R1())
    other_root = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([]))
        .public_key(stranger.public_key())
        .serial_number(1)
        .not_valid_before(x509.load_pem_x509_certificate(ca.roots_pem).not_valid_before_utc)
        .not_valid_after(x509.load_pem_x509_certificate(ca.roots_pem).not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(stranger, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CaError) as err:
        asyncio.run(bundle(other_root))
    assert err.value.code == "UNAVAILABLE"  # the CA's certificate does not chain to a root we trust
    metrics = httpx.get(f"http://127.0.0.1:{ca.metrics_port}/metrics").text
    assert 'ca_requests_total{result="issued"}' in metrics


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    placements=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["node-1", "node-2"])), min_size=0, max_size=4
    )
)
def test_property_a_certificate_is_issued_exactly_when_the_rule_holds(mesh, tokens, placements) -> None:
    istiod, ca = mesh
    with istiod.client() as client:
        for i, (sa, node) in enumerate(placements):
            client.post("/api/v1/namespaces/istio-system/pods", json=pod(f"prop-{i}", sa, node, ns="istio-system"))
        for sa in ("a", "b", "c"):
            for node in ("node-1", "node-2"):
                identity = Identity("cluster.local", "istio-system", sa)
                expected = (sa, node) in placements
                try:
                    request(ca, tokens[node], identity)
                    got = True
                except CaError as e:
                    assert e.code == "PERMISSION_DENIED"
                    got = False
                assert got == expected, (sa, node, placements)
        for i in range(len(placements)):
            client.delete(f"/api/v1/namespaces/istio-system/pods/prop-{i}")
        for sa, node in set(placements):  # let the deletions reach the CA before the next example
            harness.wait_for(lambda sa=sa, node=node: _denied(ca, tokens[node], sa), 5, f"{sa} on {node} to be denied")


def _denied(ca: harness.MeshCa, token: str, sa: str) -> bool:
    try:
        request(ca, token, Identity("cluster.local", "istio-system", sa))
    except CaError:
        return True
    return False
