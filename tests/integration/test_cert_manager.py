"""The certificate manager against the real mesh-ca: a node's ztunnel fetching and rotating the
certificate of a service account with a pod on its node, over gRPC with TLS and a node token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mesh.certs.ca_client import CaClient
from mesh.certs.certificate import CertificateError
from mesh.certs.manager import CertificateManager, CertState
from mesh.clock import SystemClock
from mesh.identity import Identity
from services.ca.audit import read_audit
from tests import harness

pytestmark = pytest.mark.integration

TTL = timedelta(seconds=60)  # the CA's floor, lowered below with --min-cert-ttl


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[harness.Istiod, harness.MeshCa, str]]:
    tmp = tmp_path_factory.mktemp("cert-manager")
    with (
        harness.running_istiod(tmp, "sqlite") as istiod,
        harness.running_ca(istiod, ["--min-cert-ttl", "60"]) as ca,
    ):
        token = harness.create_node(istiod, "node-1")
        yield istiod, ca, token


place_pod = harness.create_pod


def manager(ca: harness.MeshCa, token: str) -> CertificateManager:
    return CertificateManager(
        lambda: CaClient(ca.address, ca.roots_pem, token), SystemClock(), "cluster.local", ttl=TTL
    )


def test_fetch_and_rotate_at_half_life(mesh) -> None:
    istiod, ca, token = mesh
    sleep = Identity("cluster.local", "default", "sleep")
    place_pod(istiod, "sleep-1", "sleep")

    async def scenario() -> tuple:
        async with manager(ca, token) as certs:
            first = await certs.get(sleep)
            status = certs.certificates()[0]
            # Rotation: the old certificate is served until the refresh (half of what is left,
            # about 30 s for a 60 s certificate backdated by the CA), then the new one.
            deadline = time.monotonic() + 60
            while (await certs.get(sleep)).serial == first.serial:
                assert time.monotonic() < deadline, "no refresh within 60 s"
                await asyncio.sleep(0.5)
            refreshed_at = datetime.now(UTC)
            second = await certs.get(sleep)
            return first, status, refreshed_at, second

    first, status, refreshed_at, second = asyncio.run(scenario())
    leaf = x509.load_pem_x509_certificate(first.leaf_pem.encode())
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    ) == [str(sleep)]
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey) and leaf.public_key().curve.name == "secp256r1"
    assert leaf.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "cluster.local"
    assert len(first.roots) == 1 and first.roots[0] in ca.roots_pem.decode()
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(first.roots[0].encode()))
    assert first.serial == format(leaf.serial_number, "x")
    assert first.not_after - datetime.now(UTC) < TTL, "the requested 60 s lifetime was honoured"
    assert status.state is CertState.AVAILABLE and status.next_refresh is not None
    # Refreshed around the scheduled time, well before expiry.
    assert abs((refreshed_at - status.next_refresh).total_seconds()) < 5
    assert refreshed_at < first.not_after
    assert second.serial != first.serial and second.not_after > first.not_after
    issued = [e for e in read_audit(ca.audit_log) if e.get("decision") == "issued" and e.get("identity") == str(sleep)]
    assert {first.serial, second.serial} <= {e.get("serial") for e in issued}


def test_an_identity_without_a_pod_on_the_node_is_unavailable(mesh) -> None:
    istiod, ca, token = mesh
    stranger = Identity("cluster.local", "default", "stranger")
    place_pod(istiod, "stranger-1", "stranger", node="node-2")

    async def scenario() -> tuple:
        async with manager(ca, token) as certs:
            with pytest.raises(CertificateError) as refused:
                await certs.get(stranger)
            return refused.value, certs.certificates()

    error, statuses = asyncio.run(scenario())
    assert "PERMISSION_DENIED" in str(error)
    (status,) = statuses
    assert status.state is CertState.UNAVAILABLE and status.serial is None
    assert status.next_refresh is not None, "retried with back-off"


def test_prefetch_for_the_node_service_accounts(mesh) -> None:
    istiod, ca, token = mesh
    accounts = [Identity("cluster.local", "default", f"warm-{i}") for i in range(3)]
    for i, identity in enumerate(accounts):
        place_pod(istiod, f"warm-{i}", identity.service_account)

    async def scenario() -> dict:
        async with manager(ca, token) as certs:
            for identity in accounts:
                certs.prefetch(identity)
            deadline = time.monotonic() + 20
            while {s.state for s in certs.certificates()} != {CertState.AVAILABLE} or len(certs.certificates()) < 3:
                assert time.monotonic() < deadline, certs.certificates()
                await asyncio.sleep(0.1)
            # What config_dump shows for an identity nobody asked for yet: the prefetched one.
            held = {identity: certs.held(identity) for identity in accounts}
            assert all(c is not None for c in held.values())
            assert certs.held(Identity("cluster.local", "default", "never-asked")) is None
            return {s.identity: s.serial for s in certs.certificates()}, held

    serials, held = asyncio.run(scenario())
    assert set(serials) == set(accounts) and all(serials.values())
    assert {identity: cert.serial for identity, cert in held.items()} == serials
