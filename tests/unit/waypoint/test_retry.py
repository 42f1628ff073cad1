"""Unit tests for dataplane.waypoint.l7.retry: Envoy retry semantics."""

from __future__ import annotations

import random

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from dataplane.waypoint.l7.model import UpstreamFailure, UpstreamResult
from dataplane.waypoint.l7.retry import NO_RETRIES, RetryRules

pytestmark = pytest.mark.unit


def rules(retry_on: str, retries: int | None = None, **fields) -> RetryRules:
    policy = rc_pb2.RetryPolicy(retry_on=retry_on, **fields)
    if retries is not None:
        policy.num_retries.CopyFrom(wrappers_pb2.UInt32Value(value=retries))
    return RetryRules.from_proto(policy)


def response(status: int, *headers: tuple[str, str]) -> UpstreamResult:
    return UpstreamResult(status=status, headers=headers)


def failure(kind: UpstreamFailure) -> UpstreamResult:
    return UpstreamResult(failure=kind)


def test_retry_on_503_up_to_num_retries():
    r = rules("5xx", retries=3)
    attempts = 1
    while r.should_retry(response(503), attempts):
        attempts += 1
    assert attempts == 4  # the first try and three retries
    assert not r.should_retry(response(200), 1)


def test_num_retries_defaults_to_one_and_no_policy_never_retries():
    r = rules("5xx")
    assert r.should_retry(response(500), 1) and not r.should_retry(response(500), 2)
    assert not NO_RETRIES.should_retry(response(503), 1)
    assert RetryRules.from_proto(None) is NO_RETRIES


@pytest.mark.parametrize(
    ("retry_on", "status", "expected"),
    [
        ("5xx", 500, True),
        ("5xx", 404, False),
        ("gateway-error", 502, True),
        ("gateway-error", 504, True),
        ("gateway-error", 500, False),
        ("retriable-4xx", 409, True),
        ("retriable-4xx", 429, False),
        ("reset", 503, False),
        ("connect-failure", 503, False),
    ],
)
def test_status_based_retry_on(retry_on, status, expected):
    assert rules(retry_on, retries=1).should_retry(response(status), 1) is expected


def test_retriable_status_codes():
    r = rules("retriable-status-codes", retries=2, retriable_status_codes=[429, 503])
    assert r.should_retry(response(429), 1)
    assert not r.should_retry(response(500), 1)


@pytest.mark.parametrize(
    ("retry_on", "kind", "expected"),
    [
        ("connect-failure", UpstreamFailure.CONNECT_FAILURE, True),
        ("connect-failure", UpstreamFailure.RESET, False),
        ("refused-stream", UpstreamFailure.REFUSED_STREAM, True),
        ("refused-stream", UpstreamFailure.CONNECT_FAILURE, False),
        ("reset", UpstreamFailure.RESET, True),
        ("5xx", UpstreamFailure.CONNECT_FAILURE, True),
        ("5xx", UpstreamFailure.PER_TRY_TIMEOUT, True),
        ("gateway-error", UpstreamFailure.RESET, True),
        ("retriable-status-codes", UpstreamFailure.PER_TRY_TIMEOUT, False),
        ("5xx,reset,connect-failure", UpstreamFailure.OVERFLOW, False),
    ],
)
def test_failure_based_retry_on(retry_on, kind, expected):
    assert rules(retry_on, retries=1).should_retry(failure(kind), 1) is expected


def test_grpc_status_tokens():
    r = rules("unavailable,cancelled,deadline-exceeded,resource-exhausted", retries=1)
    for code in ("14", "1", "4", "8"):
        assert r.should_retry(response(200, ("grpc-status", code)), 1)
    assert not r.should_retry(response(200, ("grpc-status", "13")), 1)  # internal not asked for
    assert not r.should_retry(response(200, ("grpc-status", "0")), 1)


def test_overloaded_and_ratelimited_responses():
    assert not rules("5xx", retries=1).should_retry(response(503, ("x-envoy-overloaded", "true")), 1)
    limited = response(429, ("x-envoy-ratelimited", "true"))
    assert not rules("retriable-status-codes", retries=1, retriable_status_codes=[429]).should_retry(limited, 1)
    assert rules("envoy-ratelimited", retries=1).should_retry(limited, 1)


def test_retriable_headers():
    matcher = rc_pb2.HeaderMatcher(name="x-retry-me", string_match=string_pb2.StringMatcher(exact="yes"))
    r = rules("retriable-headers", retries=1, retriable_headers=[matcher])
    assert r.should_retry(response(200, ("x-retry-me", "yes")), 1)
    assert not r.should_retry(response(200), 1)


def test_per_try_timeout_and_host_predicate():
    r = rules(
        "5xx",
        per_try_timeout=duration_pb2.Duration(nanos=500_000_000),
        retry_host_predicate=[rc_pb2.RetryPolicy.RetryHostPredicate(name="envoy.retry_host_predicates.previous_hosts")],
    )
    assert r.per_try_timeout == 0.5 and r.avoid_previous_hosts
    assert rules("5xx").per_try_timeout is None


def test_backoff_defaults_are_jittered_within_bounds():
    r = rules("5xx", retries=5)
    rng = random.Random(3)
    for retry, ceiling in [(1, 0.025), (2, 0.05), (3, 0.1), (4, 0.2), (5, 0.25), (9, 0.25)]:
        samples = [r.backoff(retry, rng) for _ in range(500)]
        assert all(0 <= s < ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # jitter spans the interval
    assert len({r.backoff(3, rng) for _ in range(50)}) > 10


def test_backoff_configured_intervals():
    r = rules(
        "5xx",
        retry_back_off=rc_pb2.RetryPolicy.RetryBackOff(
            base_interval=duration_pb2.Duration(nanos=100_000_000),
            max_interval=duration_pb2.Duration(nanos=300_000_000),
        ),
    )
    rng = random.Random(0)
    assert (r.base_interval, r.max_interval) == (0.1, 0.3)
    assert all(r.backoff(6, rng) < 0.3 for _ in range(200))
