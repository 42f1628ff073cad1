"""A pod's service-account token: obtained before its containers start, kept fresh while it runs.

As the kubelet does for the projected token volume, the containers of a new pod do not start
until the token file exists: each attempt is bounded (`ATTEMPT_TIMEOUT`), failures are retried
with a capped back-off, and the containers show `ContainerCreating` with the reason meanwhile.
Afterwards the token is renewed at 80 % of its lifetime. The token itself is never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from mesh.kubeclient import ApiStatusError
from mesh.sa_tokens import PodToken, TokenRequestError, write_token

from .spec import PodSpec

log = logging.getLogger("mesh-runtime.tokens")
RequestToken = Callable[[PodSpec], Awaitable[PodToken]]
ATTEMPT_TIMEOUT = 10.0
RETRY_FIRST, RETRY_MAX = 1.0, 30.0
FAILURES = (ApiStatusError, TokenRequestError, httpx.HTTPError, OSError)  # OSError covers TimeoutError


def retry_delay(previous: float | None) -> float:
    """1 s, 2 s, 4 s … up to 30 s between failed attempts."""
    return RETRY_FIRST if previous is None else min(previous * 2, RETRY_MAX)


def refresh_delay(token: PodToken, now: datetime) -> float:
    """Seconds until the token should be renewed (0 when that moment has passed)."""
    return max(0.0, (token.refresh_at() - now).total_seconds())


def describe(error: BaseException) -> str:
    """A failure in words, for the log and the pod's status (never the token)."""
    if isinstance(error, ApiStatusError):
        return f"istiod refused the TokenRequest: {error.code} {error.reason}: {error.message}"
    if isinstance(error, TimeoutError):
        return f"istiod did not answer the TokenRequest within {ATTEMPT_TIMEOUT:g}s"
    return f"{type(error).__name__}: {error}"


class PodTokenKeeper:
    """Keeps `path` holding a valid token of `pod`. Used from the event loop only."""

    def __init__(self, pod: PodSpec, path: Path, request: RequestToken, on_waiting: Callable[[str], None]):
        self.pod = pod
        self.path = path
        self._request = request
        self._on_waiting = on_waiting  # told why the containers are still waiting
        self.current: PodToken | None = None

    async def _fetch(self) -> None:
        token = await asyncio.wait_for(self._request(self.pod), ATTEMPT_TIMEOUT)
        write_token(self.path, token.token)
        self.current = token

    async def obtain(self) -> None:
        """Get a first token, retrying until it comes (the pod's deletion cancels this)."""
        delay: float | None = None
        while True:
            try:
                await self._fetch()
                log.info("pod %s: service-account token written (%s)", self.pod.full_name, self.pod.service_account)
                return
            except FAILURES as e:
                delay = retry_delay(delay)
                why = describe(e)
                log.warning("pod %s: no service-account token: %s (retrying in %gs)", self.pod.full_name, why, delay)
                self._on_waiting(f"service-account token of {self.pod.service_account}: {why} (retrying in {delay:g}s)")
                await asyncio.sleep(delay)

    async def keep_fresh(self) -> None:
        """Renew at 80 % of each token's lifetime while the pod lives (cancelled with the pod)."""
        while True:
            if self.current is None:
                await self.obtain()
            assert self.current is not None
            await asyncio.sleep(refresh_delay(self.current, datetime.now(UTC)))
            delay: float | None = None
            while True:
                try:
                    await self._fetch()
                    break
                except FAILURES as e:
                    delay = retry_delay(delay)
                    left = (self.current.expires_at - datetime.now(UTC)).total_seconds()
                    log.warning(
                        "pod %s: token renewal failed: %s (retrying in %gs; the current one expires in %ds)",
                        self.pod.full_name,
                        describe(e),
                        delay,
                        max(0, int(left)),
                    )
                    await asyncio.sleep(delay)
