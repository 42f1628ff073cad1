"""Retries: Envoy's route RetryPolicy as pure decisions.

`RetryRules.from_proto(policy)` once per route decision; after each attempt the proxy asks
`should_retry(result, attempt)` and, before the next try, waits `backoff(retry, rng)`. It also
takes a `retries` token from the cluster's circuit breaker (upstreams.py): no token, no retry.

Envoy's rules (router docs "x-envoy-retry-on", RetryStateImpl):
- `num_retries` defaults to 1; attempt n (1 = the first try) may be retried while n <= num_retries;
- a response: `5xx` any 5xx; `gateway-error` 502/503/504; `retriable-4xx` 409;
  `retriable-status-codes` the listed codes; `retriable-headers` a response header matcher;
  gRPC `cancelled` / `deadline-exceeded` / `internal` / `resource-exhausted` / `unavailable` by the
  `grpc-status` of a trailers-only response; never a response carrying `x-envoy-overloaded`, nor
  `x-envoy-ratelimited` unless `envoy-ratelimited` is asked for;
- no response: a connect failure, a reset and a per-try timeout are retried under `5xx`,
  `gateway-error` and `reset` (Envoy counts a reset as a 5xx); a connect failure also under
  `connect-failure`, a refused stream under `refused-stream`; a circuit-breaker overflow never;
- back-off: retry n waits a uniformly random time in [0, min(base·2^(n-1), max)), base
  `retry_back_off.base_interval` (25 ms), max `max_interval` (10 × base, so 250 ms).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2 as rc_pb2

from . import matchers
from .model import UpstreamFailure, UpstreamResult

DEFAULT_BASE_INTERVAL = 0.025
MAX_INTERVAL_FACTOR = 10
PREVIOUS_HOSTS_PREDICATE = "envoy.retry_host_predicates.previous_hosts"

_GRPC_CODES = {"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8, "internal": 13, "unavailable": 14}
_RESET_TOKENS = frozenset({"5xx", "gateway-error", "reset"})
_FAILURE_TOKENS = {
    UpstreamFailure.CONNECT_FAILURE: _RESET_TOKENS | {"connect-failure", "reset-before-request"},
    UpstreamFailure.REFUSED_STREAM: _RESET_TOKENS | {"refused-stream"},
    UpstreamFailure.RESET: _RESET_TOKENS,
    UpstreamFailure.PER_TRY_TIMEOUT: _RESET_TOKENS,
    UpstreamFailure.OVERFLOW: frozenset(),
}


@dataclass(frozen=True, kw_only=True)
class RetryRules:
    """A compiled RetryPolicy. `NO_RETRIES` when the route has none."""

    retry_on: frozenset[str] = frozenset()
    num_retries: int = 0
    per_try_timeout: float | None = None
    retriable_status_codes: frozenset[int] = frozenset()
    retriable_headers: tuple[Callable[[UpstreamResult], bool], ...] = ()
    base_interval: float = DEFAULT_BASE_INTERVAL
    max_interval: float = DEFAULT_BASE_INTERVAL * MAX_INTERVAL_FACTOR
    avoid_previous_hosts: bool = False
    host_selection_max_attempts: int = 1

    @classmethod
    def from_proto(cls, policy: rc_pb2.RetryPolicy | None) -> RetryRules:
        """Compile a route's (or virtual host's) RetryPolicy; None gives no retries."""
        if policy is None:
            return NO_RETRIES
        base = DEFAULT_BASE_INTERVAL
        maximum: float | None = None
        if policy.HasField("retry_back_off"):
            back_off = policy.retry_back_off
            base = back_off.base_interval.ToTimedelta().total_seconds() or DEFAULT_BASE_INTERVAL
            if back_off.HasField("max_interval"):
                maximum = back_off.max_interval.ToTimedelta().total_seconds()
        per_try = policy.per_try_timeout.ToTimedelta().total_seconds() if policy.HasField("per_try_timeout") else 0
        return cls(
            retry_on=frozenset(t.strip() for t in policy.retry_on.split(",") if t.strip()),
            num_retries=policy.num_retries.value if policy.HasField("num_retries") else 1,
            per_try_timeout=per_try or None,
            retriable_status_codes=frozenset(policy.retriable_status_codes),
            retriable_headers=tuple(
                matchers.header_matcher(h, lambda result, name: result.header(name)) for h in policy.retriable_headers
            ),
            base_interval=base,
            max_interval=max(base, maximum) if maximum is not None else base * MAX_INTERVAL_FACTOR,
            avoid_previous_hosts=any(p.name == PREVIOUS_HOSTS_PREDICATE for p in policy.retry_host_predicate),
            host_selection_max_attempts=max(1, policy.host_selection_retry_max_attempts),
        )

    def retriable(self, result: UpstreamResult) -> bool:
        """Whether this outcome is one the policy retries (regardless of the count)."""
        if result.failure is not None:
            return bool(self.retry_on & _FAILURE_TOKENS[result.failure])
        if result.header("x-envoy-overloaded") is not None:
            return False
        if result.header("x-envoy-ratelimited") is not None:
            return "envoy-ratelimited" in self.retry_on
        return self._retriable_response(result)

    def _retriable_response(self, result: UpstreamResult) -> bool:
        status = result.status or 0
        on = self.retry_on
        if "5xx" in on and 500 <= status <= 599:
            return True
        if "gateway-error" in on and status in (502, 503, 504):
            return True
        if "retriable-4xx" in on and status == 409:
            return True
        if "retriable-status-codes" in on and status in self.retriable_status_codes:
            return True
        if "retriable-headers" in on and any(m(result) for m in self.retriable_headers):
            return True
        grpc_status = result.header("grpc-status")
        if grpc_status is not None and grpc_status.isdigit():
            wanted = {code for token, code in _GRPC_CODES.items() if token in on}
            return int(grpc_status) in wanted
        return False

    def should_retry(self, result: UpstreamResult, attempt: int) -> bool:
        """Whether to retry after attempt number `attempt` (1 = the first try) ended so."""
        return attempt <= self.num_retries and self.retriable(result)

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1 = the first retry), jittered as Envoy's
        JitteredExponentialBackOffStrategy does (whole milliseconds)."""
        ceiling_ms = min(self.base_interval * 2 ** max(0, retry - 1), self.max_interval) * 1000
        return min(rng.randrange(max(1, int(ceiling_ms))), int(self.max_interval * 1000)) / 1000


NO_RETRIES = RetryRules()
