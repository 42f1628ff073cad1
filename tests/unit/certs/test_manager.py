"""The certificate manager's timing: caching, shared CSRs, half-life refresh, back-off, priority.

Time is a FakeClock and the CA a FakeCa (tests/fakes): nothing sleeps. The real mesh-ca is
exercised in tests/integration/test_cert_manager.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from mesh.certs.certificate import CertificateError
from mesh.certs.manager import CertificateManager, CertState, Priority
from mesh.identity import Identity
from tests.fakes.fake_ca import FakeCa
from tests.fakes.fake_clock import EPOCH, FakeClock, settle

pytestmark = pytest.mark.unit

TD = "cluster.local"
LIFETIME = 100  # seconds: half-life 50
SLEEP = Identity(TD, "default", "sleep")


def sa(name: str) -> Identity:
    return Identity(TD, "default", name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ca(clock: FakeClock) -> FakeCa:
    return FakeCa(clock)


@contextlib.asynccontextmanager
async def running(ca: FakeCa, clock: FakeClock, **kw) -> AsyncIterator[CertificateManager]:
    async with CertificateManager(lambda: ca, clock, TD, ttl=timedelta(seconds=LIFETIME), **kw) as certs:
        yield certs


def states(certs: CertificateManager) -> dict[str, CertState]:
    return {c.identity.service_account: c.state for c in certs.certificates()}


async def test_get_fetches_once_then_serves_the_cache(clock, ca) -> None:
    async with running(ca, clock) as certs:
        first = await certs.get(SLEEP)
        again = await certs.get(SLEEP)
    assert again is first
    assert ca.identities() == [str(SLEEP)]
    assert ca.calls[0].validity == LIFETIME
    assert first.identity == SLEEP
    assert (first.not_before, first.not_after) == (EPOCH, EPOCH + timedelta(seconds=LIFETIME))
    assert len(first.chain) == 1 and first.roots == (ca.root_pem,)
    assert b"PRIVATE KEY" in first.key_pem
    assert ca.closed, "the manager closes its CA client when it stops"


async def test_concurrent_gets_share_one_csr(clock, ca) -> None:
    async with running(ca, clock) as certs:
        ca.hold()
        waiting = [asyncio.create_task(certs.get(SLEEP)) for _ in range(5)]
        await settle()
        assert len(ca.calls) == 1
        assert states(certs) == {"sleep": CertState.INITIALIZING}
        ca.release()
        got = await asyncio.gather(*waiting)
    assert all(cert is got[0] for cert in got)
    assert len(ca.calls) == 1


async def test_a_caller_giving_up_does_not_disturb_the_others(clock, ca) -> None:
    async with running(ca, clock) as certs:
        ca.hold()
        impatient = asyncio.create_task(certs.get(SLEEP))
        patient = asyncio.create_task(certs.get(SLEEP))
        await settle()
        impatient.cancel()
        ca.release()
        assert (await patient).identity == SLEEP
        assert impatient.cancelled()


async def test_refresh_at_half_life_serving_the_old_certificate_until_then(clock, ca) -> None:
    async with running(ca, clock) as certs:
        first = await certs.get(SLEEP)
        assert certs.certificates()[0].next_refresh == EPOCH + timedelta(seconds=50)
        await clock.advance(49.9)
        assert len(ca.calls) == 1 and await certs.get(SLEEP) is first
        await clock.advance(0.1)
        assert [c.at for c in ca.calls] == [EPOCH, EPOCH + timedelta(seconds=50)]
        second = await certs.get(SLEEP)
        assert second.serial != first.serial and second.not_before == EPOCH + timedelta(seconds=50)
        await clock.advance(50)
        assert len(ca.calls) == 3


async def test_a_short_lived_backdated_certificate_does_not_refresh_in_a_loop(clock, ca) -> None:
    # mesh-ca backdates not_before by a minute: with a 60 s lifetime the half-life is the moment
    # of issue. The refresh then comes halfway through what is left (30 s), not at once.
    ca.backdate = timedelta(seconds=60)
    async with CertificateManager(lambda: ca, clock, TD, ttl=timedelta(seconds=60)) as certs:
        await certs.get(SLEEP)
        await clock.advance(29.9)
        assert len(ca.calls) == 1
        await clock.advance(0.1)
        assert len(ca.calls) == 2


async def test_failures_back_off_from_half_a_second_doubling_to_150s(clock, ca) -> None:
    ca.fail()
    async with running(ca, clock) as certs:
        with pytest.raises(CertificateError, match="fake CA refuses"):
            await certs.get(SLEEP)
        assert states(certs) == {"sleep": CertState.UNAVAILABLE}
        await clock.advance(1000)
        times = [(c.at - EPOCH).total_seconds() for c in ca.calls]
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
        assert gaps == [0.5, 1, 2, 4, 8, 16, 32, 64, 128, 150, 150, 150, 150]
        # Unavailable: live traffic fails at once with the last error instead of queueing a CSR.
        calls = len(ca.calls)
        with pytest.raises(CertificateError, match="UNAVAILABLE"):
            await certs.get(SLEEP)
        assert len(ca.calls) == calls
        ca.recover()
        await clock.advance(150)
        assert (await certs.get(SLEEP)).identity == SLEEP
        assert states(certs) == {"sleep": CertState.AVAILABLE}


async def test_back_off_is_per_identity_and_resets_after_success(clock, ca) -> None:
    async with running(ca, clock) as certs:
        ca.fail(str(sa("a")), times=3)
        with pytest.raises(CertificateError):
            await certs.get(sa("a"))
        await certs.get(sa("b"))  # unaffected by a's failures
        await clock.advance(0.5 + 1 + 2)  # retries at 0.5, 1.5, 3.5: the last succeeds
        assert states(certs) == {"a": CertState.AVAILABLE, "b": CertState.AVAILABLE}
        ca.fail(str(sa("a")), times=1)
        a = await certs.get(sa("a"))
        await clock.advance_to(certs.certificates()[0].next_refresh)  # a's refresh fails once
        refreshed = len(ca.calls)
        await clock.advance(0.5)  # back-off starts again from 500 ms
        assert len(ca.calls) == refreshed + 1
        assert (await certs.get(sa("a"))).serial != a.serial


async def test_keeps_the_old_certificate_until_it_expires_while_renewal_fails(clock, ca) -> None:
    async with running(ca, clock) as certs:
        first = await certs.get(SLEEP)
        ca.fail()
        await clock.advance(50)  # the refresh fails
        assert await certs.get(SLEEP) is first
        (status,) = certs.certificates()
        assert status.state is CertState.AVAILABLE and "fake CA refuses" in status.error
        assert status.serial == first.serial and status.not_after == first.not_after
        await clock.advance(49.99)
        assert await certs.get(SLEEP) is first
        await clock.advance(0.01)  # not_after
        with pytest.raises(CertificateError, match=r"expired .* renewal is failing"):
            await certs.get(SLEEP)
        assert states(certs) == {"sleep": CertState.UNAVAILABLE}
        ca.recover()
        await clock.advance(150)
        assert (await certs.get(SLEEP)).serial != first.serial


async def test_live_traffic_jumps_the_queue(clock, ca) -> None:
    # As istio/ztunnel's test_priority: one fetch at a time; the first request starts at once,
    # then the others by priority (REALTIME, WARMUP, BACKGROUND), not by arrival.
    async with running(ca, clock, concurrency=1) as certs:
        ca.hold()
        waiting = []
        for name, priority in [
            ("id1", Priority.BACKGROUND),
            ("id2", Priority.BACKGROUND),
            ("id3", Priority.WARMUP),
            ("id4", Priority.REALTIME),
        ]:
            waiting.append(asyncio.create_task(certs.get(sa(name), priority)))
            await settle()
        ca.release()
        await asyncio.gather(*waiting)
    assert ca.identities() == [str(sa(n)) for n in ("id1", "id4", "id3", "id2")]


async def test_a_get_raises_the_priority_of_a_queued_prefetch(clock, ca) -> None:
    async with running(ca, clock, concurrency=1) as certs:
        ca.hold()
        for name in ("a", "b", "c"):
            certs.prefetch(sa(name))
        await settle()
        live = asyncio.create_task(certs.get(sa("c")))
        await settle()
        ca.release()
        await live
        await settle()
    assert ca.identities() == [str(sa(n)) for n in ("a", "c", "b")]


async def test_prefetch_fetches_in_the_background(clock, ca) -> None:
    async with running(ca, clock) as certs:
        certs.prefetch(SLEEP)
        certs.prefetch(SLEEP)
        await settle()
        assert states(certs) == {"sleep": CertState.AVAILABLE}
        assert len(ca.calls) == 1
        assert (await certs.get(SLEEP)).identity == SLEEP
        assert len(ca.calls) == 1


async def test_forget_stops_refreshing_and_fails_waiters(clock, ca) -> None:
    async with running(ca, clock) as certs:
        await certs.get(sa("gone"))
        certs.forget(sa("gone"))
        await settle()
        assert certs.certificates() == []
        await clock.advance(500)
        assert len(ca.calls) == 1
        ca.hold()
        waiting = asyncio.create_task(certs.get(sa("pending")))
        await settle()
        certs.forget(sa("pending"))
        with pytest.raises(CertificateError, match="no longer managed"):
            await waiting
        ca.release()
        # Managed again afterwards: a fresh fetch.
        assert (await certs.get(sa("pending"))).identity == sa("pending")


async def test_foreign_trust_domain_is_refused_without_a_csr(clock, ca) -> None:
    async with running(ca, clock) as certs:
        with pytest.raises(CertificateError, match=r"signs only trust domain cluster\.local"):
            await certs.get(Identity("other.example", "default", "sleep"))
        with pytest.raises(CertificateError):
            certs.prefetch(Identity("other.example", "default", "sleep"))
    assert ca.calls == []


async def test_a_certificate_for_another_identity_is_refused(clock, ca) -> None:
    ca.wrong_san = "spiffe://cluster.local/ns/default/sa/admin"
    async with running(ca, clock) as certs:
        with pytest.raises(CertificateError, match="issued a certificate for"):
            await certs.get(SLEEP)
        (status,) = certs.certificates()
        assert status.state is CertState.UNAVAILABLE and status.serial is None
        assert status.next_refresh == EPOCH + timedelta(seconds=0.5)


async def test_a_ca_client_that_cannot_be_made_is_retried(clock, ca) -> None:
    attempts = []

    def factory() -> FakeCa:
        attempts.append(clock.now())
        if len(attempts) == 1:
            raise OSError("token file missing")
        return ca

    async with CertificateManager(factory, clock, TD) as certs:
        with pytest.raises(CertificateError, match="OSError: token file missing"):
            await certs.get(SLEEP)
        await clock.advance(0.5)
        assert (await certs.get(SLEEP)).identity == SLEEP
    assert len(attempts) == 2


async def test_stopping_fails_pending_gets_and_later_calls(clock, ca) -> None:
    certs = CertificateManager(lambda: ca, clock, TD)
    with pytest.raises(CertificateError, match="not running"):
        await certs.get(SLEEP)
    certs.start()
    ca.hold()
    waiting = asyncio.create_task(certs.get(SLEEP))
    await settle()
    await certs.aclose()
    with pytest.raises(CertificateError, match="stopped"):
        await waiting
    with pytest.raises(CertificateError, match="not running"):
        await certs.get(SLEEP)


async def test_many_identities_respect_the_concurrency_limit(clock, ca) -> None:
    async with running(ca, clock, concurrency=3) as certs:
        ca.hold()
        for i in range(10):
            certs.prefetch(sa(f"sa{i}"))
        await settle()
        assert len(ca.calls) == 3
        ca.release()
        await settle(200)
        assert len(ca.calls) == 10
        assert set(states(certs).values()) == {CertState.AVAILABLE}
