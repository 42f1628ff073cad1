"""Unit tests for dataplane.waypoint.l7.fault: HTTPFault decisions with a seeded Random."""

from __future__ import annotations

import random

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from dataplane.waypoint.l7.fault import decide

from .l7_requests import make_request

pytestmark = pytest.mark.unit

Percent = percent_pb2.FractionalPercent


def delay(seconds: float, numerator: int, denominator: int = Percent.HUNDRED) -> common_fault_pb2.FaultDelay:
    return common_fault_pb2.FaultDelay(
        fixed_delay=duration_pb2.Duration(nanos=int(seconds * 1e9) % 10**9, seconds=int(seconds)),
        percentage=Percent(numerator=numerator, denominator=denominator),
    )


def abort(status: int, numerator: int, denominator: int = Percent.HUNDRED) -> fault_pb2.FaultAbort:
    return fault_pb2.FaultAbort(http_status=status, percentage=Percent(numerator=numerator, denominator=denominator))


def test_full_percent_always_injects_and_zero_never():
    rng = random.Random(1)
    always = fault_pb2.HTTPFault(delay=delay(1.5, 100), abort=abort(503, 100))
    decision = decide(always, make_request(), rng)
    assert decision.delay == 1.5 and decision.abort_http_status == 503
    assert decision.response_flags == ("DI", "FI")
    never = fault_pb2.HTTPFault(delay=delay(1.5, 0), abort=abort(503, 0))
    assert not any(decide(never, make_request(), rng).aborts for _ in range(1000))
    unset = fault_pb2.HTTPFault(abort=fault_pb2.FaultAbort(http_status=500))  # no percentage: 0 %
    assert not decide(unset, make_request(), rng).aborts


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(25, Percent.HUNDRED, 0.25), (1000, Percent.TEN_THOUSAND, 0.10), (50_000, Percent.MILLION, 0.05)],
)
def test_percentages_by_denominator(numerator, denominator, expected):
    rng = random.Random(5)
    fault = fault_pb2.HTTPFault(abort=abort(500, numerator, denominator))
    hits = sum(decide(fault, make_request(), rng).aborts for _ in range(10_000))
    assert abs(hits / 10_000 - expected) < 0.015


def test_delay_and_abort_are_drawn_independently():
    rng = random.Random(9)
    fault = fault_pb2.HTTPFault(delay=delay(0.2, 50), abort=abort(500, 50))
    decisions = [decide(fault, make_request(), rng) for _ in range(4000)]
    both = sum(d.delay is not None and d.aborts for d in decisions)
    assert abs(both / 4000 - 0.25) < 0.03


def test_grpc_abort_reply():
    rng = random.Random(0)
    grpc_request = make_request(headers=[("content-type", "application/grpc")], protocol="HTTP/2")
    fault = fault_pb2.HTTPFault(abort=fault_pb2.FaultAbort(grpc_status=14, percentage=Percent(numerator=100)))
    status, headers, _ = decide(fault, grpc_request, rng).local_reply(grpc_request)
    assert status == 200 and ("grpc-status", "14") in headers
    http_abort = decide(fault_pb2.HTTPFault(abort=abort(403, 100)), grpc_request, rng)
    status, headers, _ = http_abort.local_reply(grpc_request)
    assert status == 200 and ("grpc-status", "7") in headers  # 403 → PERMISSION_DENIED
    plain = make_request()
    assert http_abort.local_reply(plain)[0] == 403


def test_conditions_headers_and_cluster():
    rng = random.Random(0)
    fault = fault_pb2.HTTPFault(
        abort=abort(500, 100),
        upstream_cluster="reviews-v2",
        headers=[rc_pb2.HeaderMatcher(name="end-user", string_match=string_pb2.StringMatcher(exact="jason"))],
    )
    jason = make_request(headers=[("end-user", "jason")])
    assert decide(fault, jason, rng, cluster="reviews-v2").aborts
    assert not decide(fault, jason, rng, cluster="reviews-v1").aborts
    assert not decide(fault, make_request(), rng, cluster="reviews-v2").aborts
    capped = fault_pb2.HTTPFault(abort=abort(500, 100), max_active_faults=wrappers_pb2.UInt32Value(value=2))
    assert decide(capped, jason, rng, active_faults=1).aborts
    assert not decide(capped, jason, rng, active_faults=2).aborts


def test_header_controlled_faults():
    rng = random.Random(0)
    fault = fault_pb2.HTTPFault(
        delay=common_fault_pb2.FaultDelay(
            header_delay=common_fault_pb2.FaultDelay.HeaderDelay(), percentage=Percent(numerator=100)
        ),
        abort=fault_pb2.FaultAbort(header_abort=fault_pb2.FaultAbort.HeaderAbort(), percentage=Percent(numerator=100)),
    )
    request = make_request(headers=[("x-envoy-fault-delay-request", "250"), ("x-envoy-fault-abort-request", "429")])
    decision = decide(fault, request, rng)
    assert decision.delay == 0.25 and decision.abort_http_status == 429
    lowered = make_request(
        headers=[("x-envoy-fault-abort-request", "429"), ("x-envoy-fault-abort-request-percentage", "0")]
    )
    assert not decide(fault, lowered, rng).aborts
    assert decide(fault, make_request(), rng).delay is None
