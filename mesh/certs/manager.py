"""The certificate manager of ztunnel and the waypoint: one worker task plus a handle.

Modelled on istio/ztunnel: src/identity/manager.rs (SecretManager) and reference §8:
- `get(identity)` returns the cached certificate, or asks the worker for one and waits; every
  concurrent `get` for an identity shares the one CSR in flight;
- the worker owns a queue of ready fetches ordered by priority (live traffic, REALTIME, before
  WARMUP prefetches of the node's service accounts, before BACKGROUND refreshes) and a heap of
  refresh times; at most `concurrency` CSRs are in flight (ztunnel: 8);
- a certificate is refreshed at half-life; a failed fetch is retried after a per-identity back-off
  of 500 ms doubling to 150 s, and meanwhile the current certificate keeps being served until it
  expires; an identity with no usable certificate is Unavailable and `get` fails at once with the
  last error (it does not queue behind the back-off);
- the clock and the CA client are injected: tests drive time without sleeping.

Only the worker changes the manager's state; the handle's methods read it or send the worker a
command. Everything runs on one event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum, IntEnum, StrEnum
from typing import Protocol

from mesh.clock import Clock
from mesh.identity import Identity

from .ca_client import CaError
from .certificate import Certificate, CertificateError, certificate_from_chain
from .csr import make_csr

log = logging.getLogger("mesh.certs")

INITIAL_BACKOFF = 0.5  # seconds, reference §8
MAX_BACKOFF = 150.0
DEFAULT_TTL = timedelta(hours=24)  # requested validity (ztunnel's SECRET_TTL default)
DEFAULT_CONCURRENCY = 8  # CSRs in flight at once (ztunnel's SecretManager)


class Priority(IntEnum):
    """Who needs the certificate: a refresh, a prefetch for a workload on the node, live traffic."""

    BACKGROUND = 0
    WARMUP = 1
    REALTIME = 2


class CertState(StrEnum):
    """ztunnel's certificate states, as config_dump shows them."""

    INITIALIZING = "Initializing"
    AVAILABLE = "Available"
    UNAVAILABLE = "Unavailable"


@dataclass(frozen=True)
class CertificateStatus:
    """One identity's certificate as `certificates()` reports it (for config_dump)."""

    identity: Identity
    state: CertState
    serial: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    next_refresh: datetime | None = None
    error: str | None = None


class CaClientLike(Protocol):
    """What the manager needs of a CA client (mesh.certs.ca_client.CaClient provides it)."""

    async def create_certificate(
        self, csr_pem: str, validity_seconds: int, impersonate: str | None = None
    ) -> list[str]: ...

    async def close(self) -> None: ...


CaClientFactory = Callable[[], CaClientLike]


class _Phase(Enum):
    WAITING = "waiting"  # in the timer heap (a refresh or a retry)
    READY = "ready"  # in the ready queue, waiting for a free fetch slot
    FETCHING = "fetching"


@dataclass(eq=False)
class _Slot:
    """The worker's record of one identity."""

    identity: Identity
    priority: Priority
    state: CertState = CertState.INITIALIZING
    certificate: Certificate | None = None
    error: str | None = None
    phase: _Phase = _Phase.READY
    token: int = 0  # bumped on every (re)queueing: older heap entries are stale
    due: datetime | None = None  # when WAITING: when it becomes READY
    backoff: float = 0.0
    task: asyncio.Task | None = None
    waiters: list[asyncio.Future] = field(default_factory=list)


@dataclass(frozen=True)
class _Fetch:
    identity: Identity
    priority: Priority
    waiter: asyncio.Future | None


@dataclass(frozen=True)
class _Forget:
    identity: Identity


@dataclass(frozen=True)
class _Done:
    slot: _Slot
    result: Certificate | str  # the certificate, or why there is none


class CertificateManager:
    """Fetches, caches and rotates workload certificates (see the module docstring).

    Use as `async with CertificateManager(...) as certs:`, or `start()` and `aclose()`.
    """

    def __init__(
        self,
        ca_client_factory: CaClientFactory,
        clock: Clock,
        trust_domain: str,
        *,
        ttl: timedelta = DEFAULT_TTL,
        concurrency: int = DEFAULT_CONCURRENCY,
        initial_backoff: float = INITIAL_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._factory = ca_client_factory
        self._clock = clock
        self.trust_domain = trust_domain
        self._ttl_seconds = int(ttl.total_seconds())
        self._concurrency = concurrency
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._client: CaClientLike | None = None
        self._commands: asyncio.Queue[_Fetch | _Forget | _Done] = asyncio.Queue()
        self._slots: dict[Identity, _Slot] = {}
        self._timers: list[tuple[datetime, int, _Slot, int]] = []
        self._ready: list[tuple[int, int, _Slot, int]] = []
        self._fetching: set[_Slot] = set()
        self._seq = itertools.count()
        self._worker: asyncio.Task | None = None

    # --- the handle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker on the running loop."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="certificate-manager")

    async def aclose(self) -> None:
        """Stop the worker and any CSR in flight; pending `get`s fail."""
        fetches = [slot.task for slot in self._fetching if slot.task is not None]
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        await asyncio.gather(*fetches, return_exceptions=True)  # cancelled by the worker on its way out
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> CertificateManager:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get(self, identity: Identity, priority: Priority = Priority.REALTIME) -> Certificate:
        """The current certificate of `identity`, fetching it first when there is none yet.

        Raises CertificateError when the identity has no usable certificate (the last fetch failed
        and nothing valid is cached), for a foreign trust domain, or when the manager is stopped.
        """
        self._check(identity)
        if self._worker is None or self._worker.done():
            raise CertificateError(f"{identity}: the certificate manager is not running")
        slot = self._slots.get(identity)
        if slot is not None and _usable(slot, self._clock.now()):
            return slot.certificate
        waiter = asyncio.get_running_loop().create_future()
        self._commands.put_nowait(_Fetch(identity, priority, waiter))
        return await waiter

    def prefetch(self, identity: Identity) -> None:
        """Start managing `identity` at low priority (a service account with a pod on the node)."""
        self._check(identity)
        self._commands.put_nowait(_Fetch(identity, Priority.WARMUP, None))

    def forget(self, identity: Identity) -> None:
        """Stop managing `identity` (its last workload left the node): no more refreshes."""
        self._commands.put_nowait(_Forget(identity))

    def held(self, identity: Identity) -> Certificate | None:
        """The certificate held for `identity` now, if any (no fetch; config_dump shows it)."""
        slot = self._slots.get(identity)
        return slot.certificate if slot is not None else None

    def certificates(self) -> list[CertificateStatus]:
        """Every managed identity and the state of its certificate, by identity."""
        now = self._clock.now()
        out = []
        for identity, slot in sorted(self._slots.items(), key=lambda item: str(item[0])):
            cert = slot.certificate
            state = slot.state
            if state is CertState.AVAILABLE and cert is not None and cert.expired(now):
                state = CertState.UNAVAILABLE
            out.append(
                CertificateStatus(
                    identity=identity,
                    state=state,
                    serial=cert.serial if cert else None,
                    not_before=cert.not_before if cert else None,
                    not_after=cert.not_after if cert else None,
                    next_refresh=slot.due if slot.phase is _Phase.WAITING else None,
                    error=slot.error,
                )
            )
        return out

    def _check(self, identity: Identity) -> None:
        if identity.trust_domain != self.trust_domain:
            raise CertificateError(f"{identity}: the mesh's CA signs only trust domain {self.trust_domain}")

    # --- the worker ------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                self._start_due()
                command = await self._next_command()
                if command is None:
                    continue
                try:
                    self._handle(command)
                except Exception:  # a bug here must not stop every identity's rotation
                    log.exception("certificate manager: command failed", extra={"command": repr(command)})
        finally:
            self._stop()

    async def _next_command(self) -> _Fetch | _Forget | _Done | None:
        """The next command, or None when the earliest timer fires first."""
        if not self._commands.empty():
            return self._commands.get_nowait()
        getter = asyncio.ensure_future(self._commands.get())
        if not self._timers or len(self._fetching) >= self._concurrency:
            return await getter  # a finishing fetch posts a command, which wakes us
        timer = asyncio.ensure_future(self._clock.sleep((self._timers[0][0] - self._clock.now()).total_seconds()))
        try:
            done, _ = await asyncio.wait({getter, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (getter, timer):
                if not task.done():
                    task.cancel()
        return getter.result() if getter in done else None

    def _handle(self, command: _Fetch | _Forget | _Done) -> None:
        if isinstance(command, _Fetch):
            self._on_fetch(command)
        elif isinstance(command, _Forget):
            self._on_forget(command.identity)
        else:
            self._on_done(command.slot, command.result)

    def _on_fetch(self, command: _Fetch) -> None:
        slot = self._slots.get(command.identity)
        if slot is None:
            slot = self._slots[command.identity] = _Slot(command.identity, command.priority)
            self._make_ready(slot)
        elif command.priority > slot.priority and slot.state is CertState.INITIALIZING:
            # A more urgent caller for a first certificate moves it up the queue.
            slot.priority = command.priority
            if slot.phase is _Phase.READY:
                self._make_ready(slot)
        if command.waiter is not None:
            self._answer(slot, command.waiter)

    def _answer(self, slot: _Slot, waiter: asyncio.Future) -> None:
        if waiter.done():
            return  # the caller gave up
        if _usable(slot, self._clock.now()):
            waiter.set_result(slot.certificate)
        elif slot.state is CertState.INITIALIZING:
            slot.waiters.append(waiter)
        else:
            waiter.set_exception(CertificateError(_unavailable(slot)))

    def _on_forget(self, identity: Identity) -> None:
        slot = self._slots.pop(identity, None)
        if slot is None:
            return
        slot.token += 1
        if slot.task is not None:
            slot.task.cancel()
            self._fetching.discard(slot)
        self._settle(slot, CertificateError(f"{identity}: the certificate is no longer managed"))
        log.debug("certificate forgotten", extra={"identity": str(identity)})

    def _on_done(self, slot: _Slot, result: Certificate | str) -> None:
        self._fetching.discard(slot)
        slot.task = None
        if self._slots.get(slot.identity) is not slot:
            return  # forgotten meanwhile
        now = self._clock.now()
        if isinstance(result, Certificate):
            slot.certificate, slot.state, slot.error = result, CertState.AVAILABLE, None
            slot.backoff, slot.priority = 0.0, Priority.BACKGROUND
            self._schedule(slot, max(now, result.refresh_at(now)))
            self._settle(slot, result)
            log.info(
                "certificate issued",
                extra={"identity": str(slot.identity), "serial": result.serial, "not_after": result.not_after},
            )
            return
        slot.error = result
        slot.backoff = min(slot.backoff * 2, self._max_backoff) if slot.backoff else self._initial_backoff
        self._schedule(slot, now + timedelta(seconds=slot.backoff))
        kept = slot.certificate is not None and not slot.certificate.expired(now)
        if not kept:
            slot.state = CertState.UNAVAILABLE
            self._settle(slot, CertificateError(_unavailable(slot)))
        log.warning(
            "certificate fetch failed",
            extra={"identity": str(slot.identity), "error": result, "retry_in": slot.backoff, "kept_current": kept},
        )

    def _settle(self, slot: _Slot, outcome: Certificate | CertificateError) -> None:
        """Answer everyone waiting for the slot's first certificate."""
        waiters, slot.waiters = slot.waiters, []
        for waiter in waiters:
            if waiter.done():
                continue
            if isinstance(outcome, Certificate):
                waiter.set_result(outcome)
            else:
                waiter.set_exception(outcome)

    # --- queues ----------------------------------------------------------------------------------

    def _make_ready(self, slot: _Slot) -> None:
        slot.phase, slot.token = _Phase.READY, slot.token + 1
        heapq.heappush(self._ready, (-slot.priority, next(self._seq), slot, slot.token))

    def _schedule(self, slot: _Slot, due: datetime) -> None:
        slot.phase, slot.token, slot.due = _Phase.WAITING, slot.token + 1, due
        heapq.heappush(self._timers, (slot.due, next(self._seq), slot, slot.token))

    def _current(self, slot: _Slot, token: int, phase: _Phase) -> bool:
        return self._slots.get(slot.identity) is slot and slot.token == token and slot.phase is phase

    def _start_due(self) -> None:
        """Move refreshes that are due to the ready queue, then start fetches while slots are free."""
        now = self._clock.now()
        while self._timers and self._timers[0][0] <= now:
            _, _, slot, token = heapq.heappop(self._timers)
            if self._current(slot, token, _Phase.WAITING):
                self._make_ready(slot)
        while self._ready and len(self._fetching) < self._concurrency:
            _, _, slot, token = heapq.heappop(self._ready)
            if self._current(slot, token, _Phase.READY):
                slot.phase = _Phase.FETCHING
                slot.task = asyncio.get_running_loop().create_task(self._fetch(slot))
                self._fetching.add(slot)

    async def _fetch(self, slot: _Slot) -> None:
        """One CSR to the CA; the outcome goes back to the worker as a command."""
        identity = slot.identity
        try:
            if self._client is None:
                self._client = self._factory()
            pair = make_csr(identity)
            chain = await self._client.create_certificate(pair.csr_pem, self._ttl_seconds, str(identity))
            result: Certificate | str = certificate_from_chain(identity, pair.key_pem, chain)
        except CertificateError as e:
            result = str(e)
        except CaError as e:
            result = f"{identity}: the CA refused: {e}"
        except Exception as e:  # any failure is retried with back-off; it must not kill the worker
            result = f"{identity}: {type(e).__name__}: {e}"
        self._commands.put_nowait(_Done(slot, result))

    def _stop(self) -> None:
        """The worker is ending: cancel fetches and fail everyone still waiting."""
        stopped = "the certificate manager stopped"
        for slot in list(self._fetching):
            if slot.task is not None:
                slot.task.cancel()
        for slot in self._slots.values():
            self._settle(slot, CertificateError(f"{slot.identity}: {stopped}"))
        while not self._commands.empty():
            command = self._commands.get_nowait()
            if isinstance(command, _Fetch) and command.waiter is not None and not command.waiter.done():
                command.waiter.set_exception(CertificateError(f"{command.identity}: {stopped}"))


def _usable(slot: _Slot, now: datetime) -> bool:
    return slot.state is CertState.AVAILABLE and slot.certificate is not None and not slot.certificate.expired(now)


def _unavailable(slot: _Slot) -> str:
    if slot.certificate is not None:
        expired = slot.certificate.not_after.isoformat()
        return f"{slot.identity}: the certificate expired at {expired} and renewal is failing: {slot.error}"
    return slot.error or f"{slot.identity}: no certificate"
