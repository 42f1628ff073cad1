"""Keeping the CA's answer: the checks on the chain, and when to refresh."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from mesh.certs.certificate import CertificateError, certificate_from_chain
from mesh.certs.csr import make_csr
from mesh.identity import Identity
from tests.fakes.fake_ca import FakeCa
from tests.fakes.fake_clock import EPOCH, FakeClock

pytestmark = pytest.mark.unit

SLEEP = Identity("cluster.local", "default", "sleep")


def issue(ca: FakeCa, identity: Identity, validity: int = 100) -> tuple[bytes, list[str]]:
    pair = make_csr(identity)
    return pair.key_pem, asyncio.run(ca.create_certificate(pair.csr_pem, validity, str(identity)))


def test_leaf_first_root_last() -> None:
    ca = FakeCa(FakeClock())
    key, chain = issue(ca, SLEEP)
    cert = certificate_from_chain(SLEEP, key, chain)
    assert cert.chain == (chain[0],) and cert.leaf_pem == chain[0] and cert.roots == (ca.root_pem,)
    assert cert.lifetime == timedelta(seconds=100)
    assert not cert.expired(EPOCH + timedelta(seconds=99)) and cert.expired(EPOCH + timedelta(seconds=100))


def test_refuses_what_was_not_asked_for() -> None:
    ca = FakeCa(FakeClock())
    with pytest.raises(CertificateError, match="empty certificate chain"):
        certificate_from_chain(SLEEP, b"", [])
    key, chain = issue(ca, SLEEP)
    with pytest.raises(CertificateError, match="issued a certificate for"):
        certificate_from_chain(Identity("cluster.local", "default", "web"), key, chain)
    other_key = make_csr(SLEEP).key_pem
    with pytest.raises(CertificateError, match="does not carry the requested key"):
        certificate_from_chain(SLEEP, other_key, chain)
    with pytest.raises(CertificateError, match="not PEM"):
        certificate_from_chain(SLEEP, key, ["garbage"])


def test_refresh_at_half_life_unless_backdating_puts_it_in_the_past() -> None:
    clock = FakeClock()
    ca = FakeCa(clock)
    key, chain = issue(ca, SLEEP, validity=24 * 3600)
    day = certificate_from_chain(SLEEP, key, chain)
    assert day.refresh_at(EPOCH) == EPOCH + timedelta(hours=12)
    ca.backdate = timedelta(minutes=1)
    key, chain = issue(ca, SLEEP, validity=60)
    short = certificate_from_chain(SLEEP, key, chain)
    assert short.not_before + short.lifetime / 2 == EPOCH, "half-life at the moment of issue"
    assert short.refresh_at(EPOCH) == EPOCH + timedelta(seconds=30)
