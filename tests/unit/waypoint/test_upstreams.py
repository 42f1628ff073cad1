"""Unit tests for dataplane.waypoint.l7.upstreams: endpoints, LB, circuit breakers, outlier detection."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, struct_pb2, wrappers_pb2

from dataplane.waypoint.l7.model import ConfigError, UpstreamFailure, UpstreamResult
from dataplane.waypoint.l7.upstreams import ClusterState, LbPolicy, Resource

pytestmark = pytest.mark.unit

NAME = "inbound-vip|9080||reviews.default.svc.cluster.local"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def endpoint(ip: str, port: int = 9080, tunnel: str = "hbone", health=health_check_pb2.HEALTHY) -> ec_pb2.LbEndpoint:
    istio = struct_pb2.Struct()
    istio.update({"tunnel": tunnel, "identity": f"spiffe://cluster.local/ns/default/sa/{ip}"})
    lb = ec_pb2.LbEndpoint(
        endpoint=ec_pb2.Endpoint(
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))
        ),
        health_status=health,
    )
    lb.metadata.filter_metadata["istio"].CopyFrom(istio)
    return lb


def cla(
    *ips: str, priority: int = 0, extra: list[ec_pb2.LocalityLbEndpoints] = ()
) -> endpoint_pb2.ClusterLoadAssignment:
    locality = ec_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint(ip) for ip in ips], priority=priority)
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=NAME, endpoints=[locality, *extra])


def cluster(lb=cluster_pb2.Cluster.ROUND_ROBIN, **fields) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(name=NAME, lb_policy=lb, **fields)


def outlier(
    consecutive: int = 3, base: int = 30, interval: int = 10, max_percent: int = 100
) -> outlier_detection_pb2.OutlierDetection:
    return outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=wrappers_pb2.UInt32Value(value=consecutive),
        interval=duration_pb2.Duration(seconds=interval),
        base_ejection_time=duration_pb2.Duration(seconds=base),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=max_percent),
    )


NO_PANIC = cluster_pb2.Cluster.CommonLbConfig(healthy_panic_threshold=percent_pb2.Percent(value=0))
FAIL = UpstreamResult(status=503)
OK = UpstreamResult(status=200)


def build(c: cluster_pb2.Cluster, assignment, clock=None, seed: int = 1) -> ClusterState:
    return ClusterState.build(c, assignment, clock=clock or FakeClock(), rng=random.Random(seed))


def test_endpoints_carry_istio_metadata_and_skip_unhealthy():
    assignment = cla("198.18.1.1")
    assignment.endpoints[0].lb_endpoints.append(endpoint("198.18.1.2", tunnel="plaintext"))
    assignment.endpoints[0].lb_endpoints.append(endpoint("198.18.1.3", health=health_check_pb2.UNHEALTHY))
    state = build(cluster(), assignment)
    first = state.endpoints[0]
    assert (first.address, first.port, first.tunnel) == ("198.18.1.1", 9080, "hbone")
    assert first.identity == "spiffe://cluster.local/ns/default/sa/198.18.1.1"
    assert state.endpoints[1].tunnel == "plaintext"
    picked = {state.pick().address for _ in range(20)}
    assert picked == {"198.18.1.1", "198.18.1.2"}


def test_round_robin_rotates():
    state = build(cluster(), cla("a", "b", "c"))
    assert [state.pick().address for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_random_is_roughly_uniform():
    state = build(cluster(cluster_pb2.Cluster.RANDOM), cla("a", "b"))
    counts = Counter(state.pick().address for _ in range(4000))
    assert abs(counts["a"] - 2000) < 200


def test_least_request_prefers_the_idle_endpoint():
    state = build(cluster(cluster_pb2.Cluster.LEAST_REQUEST), cla("busy", "idle"))
    busy = state.endpoints[0]
    for _ in range(5):
        state.request_started(busy)
    counts = Counter(state.pick().address for _ in range(1000))
    # Two random draws: only a double draw of "busy" picks it (about a quarter of the time).
    assert counts["idle"] > 650 and 150 < counts["busy"] < 350
    assert state.lb_policy is LbPolicy.LEAST_REQUEST


def test_unsupported_lb_policy_is_refused():
    with pytest.raises(ConfigError, match="MAGLEV"):
        build(cluster(cluster_pb2.Cluster.MAGLEV), cla("a"))


def test_lower_priority_serves_first_and_exclude_previous_hosts():
    backup = ec_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint("backup")], priority=1)
    state = build(cluster(common_lb_config=NO_PANIC), cla("a", "b", extra=[backup]))
    assert {state.pick().address for _ in range(10)} == {"a", "b"}
    a = state.endpoints[0]
    assert all(state.pick(exclude=[a]).address == "b" for _ in range(5))


def test_circuit_breaker_overflow():
    thresholds = circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                priority=base_pb2.DEFAULT, max_requests=wrappers_pb2.UInt32Value(value=2)
            ),
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                priority=base_pb2.HIGH, max_requests=wrappers_pb2.UInt32Value(value=100)
            ),
        ]
    )
    state = build(cluster(circuit_breakers=thresholds), cla("a"))
    breakers = state.breakers
    assert breakers.try_acquire(Resource.REQUESTS) and breakers.try_acquire(Resource.REQUESTS)
    assert not breakers.try_acquire(Resource.REQUESTS)  # the caller answers 503 UO
    assert breakers.overflows[Resource.REQUESTS] == 1
    breakers.release(Resource.REQUESTS)
    assert breakers.try_acquire(Resource.REQUESTS)
    assert breakers.limits[Resource.RETRIES] == 3 and breakers.limits[Resource.CONNECTIONS] == 1024


def test_ejection_after_consecutive_5xx_and_return_after_base_time():
    clock = FakeClock()
    state = build(cluster(outlier_detection=outlier(), common_lb_config=NO_PANIC), cla("bad", "good"), clock)
    bad = state.endpoints[0]
    state.request_finished(bad, FAIL)
    state.request_finished(bad, OK)  # a success resets the streak
    for _ in range(2):
        state.request_finished(bad, FAIL)
    assert state.ejected() == []
    state.request_finished(bad, FAIL)
    assert state.ejected() == [bad]
    assert {state.pick().address for _ in range(10)} == {"good"}
    clock.now += 25
    assert state.ejected() == [bad]
    clock.now += 10  # 35 s later: the sweep at +30 s returned it
    assert state.ejected() == []
    assert {state.pick().address for _ in range(10)} == {"bad", "good"}


def test_second_ejection_lasts_twice_as_long():
    clock = FakeClock()
    state = build(
        cluster(outlier_detection=outlier(consecutive=1), common_lb_config=NO_PANIC), cla("bad", "good"), clock
    )
    bad = state.endpoints[0]
    state.request_finished(bad, FAIL)
    clock.now += 31
    assert state.ejected() == []
    state.request_finished(bad, FAIL)  # ejected again at +31 s, now for 2 x 30 s
    clock.now += 50
    assert state.ejected() == [bad]
    clock.now += 20  # the first sweep 60 s after the ejection returns it (sweeps run every 10 s)
    assert state.ejected() == []


def test_local_failures_count_as_5xx():
    state = build(cluster(outlier_detection=outlier(consecutive=2), common_lb_config=NO_PANIC), cla("a", "b"))
    a = state.endpoints[0]
    state.request_finished(a, UpstreamResult(failure=UpstreamFailure.CONNECT_FAILURE))
    state.request_finished(a, UpstreamResult(failure=UpstreamFailure.PER_TRY_TIMEOUT))
    assert state.ejected() == [a]


def test_overflow_is_not_an_endpoint_failure():
    state = build(cluster(outlier_detection=outlier(consecutive=1)), cla("a", "b"))
    state.request_finished(state.endpoints[0], UpstreamResult(failure=UpstreamFailure.OVERFLOW))
    assert state.ejected() == []


def test_max_ejection_percent_still_ejects_one():
    state = build(
        cluster(outlier_detection=outlier(consecutive=1, max_percent=10), common_lb_config=NO_PANIC), cla("a", "b", "c")
    )
    for ep in state.endpoints:
        state.request_finished(ep, FAIL)
    assert len(state.ejected()) == 1


def test_panic_routes_to_ejected_hosts_by_default():
    state = build(cluster(outlier_detection=outlier(consecutive=1)), cla("only"))
    state.request_finished(state.endpoints[0], FAIL)
    assert state.ejected() != []
    assert state.pick().address == "only"  # 0 % healthy < 50 %: Envoy's panic mode
    strict = build(cluster(outlier_detection=outlier(consecutive=1), common_lb_config=NO_PANIC), cla("only"))
    strict.request_finished(strict.endpoints[0], FAIL)
    assert strict.pick() is None  # the caller answers 503 UH


def test_new_assignment_keeps_stats_of_endpoints_that_stay():
    clock = FakeClock()
    state = build(cluster(outlier_detection=outlier(consecutive=1), common_lb_config=NO_PANIC), cla("a", "b"), clock)
    a = state.endpoints[0]
    state.request_started(state.endpoints[1])
    state.request_finished(a, FAIL)
    state.update_assignment(cla("a", "b", "c"))
    assert [ep.address for ep in state.endpoints] == ["a", "b", "c"]
    assert state.ejected() == [a]
    assert state.stats[("b", 9080, "")].active_requests == 1
    state.update_assignment(cla("c"))
    assert set(state.stats) == {("c", 9080, "")}
    state.request_finished(a, FAIL)  # a late result for a departed endpoint is ignored


def test_update_cluster_changes_policy_and_limits_keeping_counts():
    state = build(cluster(), cla("a", "b"))
    assert state.breakers.try_acquire(Resource.REQUESTS)
    limited = circuit_breaker_pb2.CircuitBreakers(
        thresholds=[circuit_breaker_pb2.CircuitBreakers.Thresholds(max_requests=wrappers_pb2.UInt32Value(value=1))]
    )
    state.update_cluster(cluster(cluster_pb2.Cluster.RANDOM, circuit_breakers=limited))
    assert state.lb_policy is LbPolicy.RANDOM
    assert not state.breakers.try_acquire(Resource.REQUESTS)
    assert state.connect_timeout == 5.0
