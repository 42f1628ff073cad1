"""Envoy translation for proxyless gRPC: the shapes gRPC accepts (reference grpc-proxyless-xds),
and what Services, Pods, HTTPRoutes, GRPCRoutes, VirtualServices, DestinationRules and
ServiceEntries become."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from services.xds.generators.envoy import EnvoyTranslator, to_any
from services.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.unit.xds import envoy_objects as e
from tests.unit.xds import objects as o
from tests.unit.xds.envoy_checks import check_all, manager_of

pytestmark = pytest.mark.unit

HOST = "greeter.default.svc.cluster.local"
GRPC_PORTS = [{"name": "grpc", "port": 80, "targetPort": 8080}]


def cluster_of(host: str = HOST, port: int = 80, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{host.replace('@', '')}"


def translate(*objects: Any) -> EnvoyTranslator:
    translator = EnvoyTranslator()
    translator.rebuild(o.Cluster(*objects).store)
    check_all({t: translator.resources(t) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)})
    return translator


def greeter(**spec: Any) -> dict:
    return o.service("greeter", selector={"app": "greeter"}, ports=spec.pop("ports", GRPC_PORTS), **spec)


def backends(*names: str) -> list[dict]:
    """A Service per name (selecting version=name) and a pod per name."""
    out = []
    for i, name in enumerate(names, start=2):
        out.append(o.service(f"greeter-{name}", selector={"app": "greeter", "version": name}, ports=GRPC_PORTS))
        out.append(o.pod(f"pod-{name}", ip=f"127.0.0.{i}", labels={"app": "greeter", "version": name}))
    return out


def routes(translator: EnvoyTranslator, name: str = HOST) -> list[rc.Route]:
    return list(translator.resources(ROUTE)[name].virtual_hosts[0].routes)


def destinations(route: rc.Route) -> dict[str, int]:
    if route.route.HasField("weighted_clusters"):
        return {c.name: c.weight.value for c in route.route.weighted_clusters.clusters}
    return {route.route.cluster: 1}


def fault_of(route: rc.Route) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    assert route.typed_per_filter_config["envoy.filters.http.fault"].Unpack(out)
    return out


def endpoints(translator: EnvoyTranslator, name: str = cluster_of()) -> list[tuple[str, int]]:
    cla = translator.resources(ENDPOINT)[name]
    return [
        (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
        for locality in cla.endpoints
        for lb in locality.lb_endpoints
    ]


# --- Services and endpoints ---------------------------------------------------------------------


def test_a_service_yields_a_listener_per_port_and_one_for_its_default_port():
    svc = greeter(ports=[{"name": "http", "port": 8000}, {"name": "grpc-api", "port": 80, "targetPort": 8080}])
    t = translate(svc, o.pod("a", ip="10.0.0.1", labels={"app": "greeter"}))
    assert set(t.resources(LISTENER)) == {HOST, f"{HOST}:80", f"{HOST}:8000"}
    assert set(t.resources(ROUTE)) == set(t.resources(LISTENER))
    assert set(t.resources(CLUSTER)) == {cluster_of(port=80), cluster_of(port=8000)}
    # `xds:///host` goes to the port named grpc*, not the first one.
    assert destinations(routes(t)[-1]) == {cluster_of(port=80): 1}
    assert t.resources(ROUTE)[HOST].virtual_hosts[0].domains == [HOST, f"{HOST}:80", "*"]
    assert endpoints(t) == [("10.0.0.1", 8080)] and endpoints(t, cluster_of(port=8000)) == [("10.0.0.1", 8000)]


def test_the_listener_is_an_api_listener_with_rds_over_ads_and_the_router_last():
    manager = manager_of(translate(greeter()).resources(LISTENER)[HOST])
    assert manager.rds.route_config_name == HOST and manager.rds.config_source.HasField("ads")
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.fault", "envoy.filters.http.router"]


def test_resources_are_packed_under_their_type_urls():
    t = translate(greeter())
    for type_url in (LISTENER, ROUTE, CLUSTER, ENDPOINT):
        for message in t.resources(type_url).values():
            assert to_any(message).type_url == type_url


def test_endpoints_are_running_pods_not_reporting_unready_with_an_ip():
    labels = {"app": "greeter"}
    ready = [{"type": "Ready", "status": "True"}]
    t = translate(
        greeter(),
        o.pod("ok", ip="10.0.0.1", labels=labels, conditions=ready),
        o.pod("unknown", ip="10.0.0.2", labels=labels, conditions=[{"type": "Ready", "status": "Unknown"}]),
        o.pod("unready", ip="10.0.0.3", labels=labels, conditions=[{"type": "Ready", "status": "False"}]),
        o.pod("pending", ip="10.0.0.4", labels=labels, phase="Pending"),
        o.pod("no-ip", ip=None, labels=labels),
        o.pod("other-app", ip="10.0.0.5", labels={"app": "other"}),
        o.pod("other-ns", ns="other", ip="10.0.0.6", labels=labels),
    )
    assert endpoints(t) == [("10.0.0.1", 8080), ("10.0.0.2", 8080)]
    cla = t.resources(ENDPOINT)[cluster_of()]
    assert len(cla.endpoints) == 1 and cla.endpoints[0].load_balancing_weight.value == 1


def test_publish_not_ready_addresses_keeps_unready_pods():
    unready = o.pod(
        "unready", ip="10.0.0.3", labels={"app": "greeter"}, conditions=[{"type": "Ready", "status": "False"}]
    )
    assert endpoints(translate(greeter(publishNotReadyAddresses=True), unready)) == [("10.0.0.3", 8080)]


def test_a_named_target_port_is_resolved_per_pod():
    svc = greeter(ports=[{"name": "grpc", "port": 80, "targetPort": "serve"}])
    t = translate(
        svc,
        o.pod("a", ip="10.0.0.1", labels={"app": "greeter"}, ports=[{"name": "serve", "containerPort": 9000}]),
        o.pod("b", ip="10.0.0.2", labels={"app": "greeter"}, ports=[{"name": "other", "containerPort": 9001}]),
    )
    assert endpoints(t) == [("10.0.0.1", 9000)]


def test_a_service_without_ready_pods_has_an_assignment_without_localities():
    t = translate(greeter())
    assert list(t.resources(ENDPOINT)[cluster_of()].endpoints) == []


def test_external_name_and_udp_only_services_yield_nothing():
    t = translate(
        o.service("ext", type="ExternalName", externalName="example.com"),
        o.service("dns", ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]),
    )
    assert not t.resources(LISTENER)


# --- HTTPRoute and GRPCRoute ----------------------------------------------------------------------


def test_an_http_route_gives_weights_a_header_match_and_ends_with_the_catch_all():
    route = e.http_route(
        "split",
        [e.service_parent("greeter")],
        [
            {"matches": [{"headers": [{"name": "X-Tier", "value": "gold"}]}], "backendRefs": [e.backend("greeter-b")]},
            {"backendRefs": [e.backend("greeter-a", weight=80), e.backend("greeter-b", weight=20)]},
        ],
    )
    t = translate(greeter(), *backends("a", "b"), route)
    gold, weighted, default = routes(t)
    assert gold.match.headers[0].name == "x-tier" and gold.match.headers[0].string_match.exact == "gold"
    assert destinations(gold) == {cluster_of("greeter-b.default.svc.cluster.local"): 1}
    assert destinations(weighted) == {
        cluster_of("greeter-a.default.svc.cluster.local"): 80,
        cluster_of("greeter-b.default.svc.cluster.local"): 20,
    }
    assert default.match.prefix == "/" and destinations(default) == {cluster_of(): 1}
    assert routes(t, f"{HOST}:80") == routes(t)


def test_a_path_prefix_matches_whole_path_segments():
    route = e.http_route(
        "paths",
        [e.service_parent("greeter")],
        [{"matches": [{"path": {"type": "PathPrefix", "value": "/pkg.Svc"}}], "backendRefs": [e.backend("greeter")]}],
    )
    first, second, _ = routes(translate(greeter(), route))
    assert (first.match.path, second.match.prefix) == ("/pkg.Svc", "/pkg.Svc/")


def test_route_precedence_follows_istio():
    def rule(path: dict, headers: int = 0) -> dict:
        match = {"path": path, "headers": [{"name": f"h{i}", "value": "v"} for i in range(headers)]}
        return {"matches": [match], "backendRefs": [e.backend("greeter")]}

    route = e.http_route(
        "order",
        [e.service_parent("greeter")],
        [
            rule({"type": "PathPrefix", "value": "/"}),
            rule({"type": "RegularExpression", "value": "/a.*"}),
            rule({"type": "PathPrefix", "value": "/a/"}),
            rule({"type": "PathPrefix", "value": "/a/"}, headers=1),
            rule({"type": "Exact", "value": "/a/b"}),
        ],
    )
    names = [r.name for r in routes(translate(greeter(), route))]
    assert names == [
        "default/order/4/0",  # exact
        "default/order/3/0",  # longest prefix, with a header
        "default/order/2/0",
        "default/order/0/0",  # "/"
        "default/order/1/0",  # regular expressions last
        "default",
    ]


@pytest.mark.parametrize(
    "parent",
    [
        {"kind": "Service", "name": "greeter"},  # no group: a Gateway API group, not a Service
        {"group": "", "kind": "Service", "name": "greeter", "port": 81},
        {"group": "", "kind": "Service", "name": "greeter", "sectionName": "http"},
        {"group": "", "kind": "Service", "name": "other"},
    ],
)
def test_routes_attach_only_to_the_service_port_they_name(parent: dict):
    route = e.http_route("r", [parent], [{"backendRefs": [e.backend("greeter-a")]}])
    assert [r.name for r in routes(translate(greeter(), *backends("a"), route))] == ["default"]


def test_routes_of_another_namespace_do_not_apply():
    route = e.http_route("r", [e.service_parent("greeter", namespace="default")], [{}], ns="other")
    assert [r.name for r in routes(translate(greeter(), route))] == ["default"]


def test_unusable_backends_are_dropped_and_a_rule_without_any_fails_unknown():
    route = e.http_route(
        "r",
        [e.service_parent("greeter", port=80)],
        [
            {
                "matches": [{"headers": [{"name": "x", "value": "1"}]}],
                "backendRefs": [
                    e.backend("missing"),
                    e.backend("greeter-a", port=9999),
                    e.backend("greeter-a", weight=0),
                ],
            },
            {"backendRefs": [e.backend("greeter-a", namespace="other"), e.backend("greeter-a")]},
        ],
    )
    failing, kept, _ = routes(translate(greeter(), *backends("a"), route))
    assert fault_of(failing).abort.grpc_status == 2  # HTTP 500, as gRPC maps it
    assert fault_of(failing).abort.percentage.numerator == 1_000_000
    assert destinations(kept) == {cluster_of("greeter-a.default.svc.cluster.local"): 1}


def test_a_backend_without_port_takes_the_first_port_of_its_service():
    route = e.http_route("r", [e.service_parent("greeter")], [{"backendRefs": [e.backend("greeter-a", port=None)]}])
    assert destinations(routes(translate(greeter(), *backends("a"), route))[0]) == {
        cluster_of("greeter-a.default.svc.cluster.local"): 1
    }


def test_http_route_filters_timeouts_and_retries():
    rule = {
        "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}]}}
        ],
        "timeouts": {"request": "1500ms"},
        "retry": {"codes": [503, 500], "attempts": 3, "backoff": "100ms"},
        "backendRefs": [e.backend("greeter")],
    }
    first = routes(translate(greeter(), e.http_route("r", [e.service_parent("greeter")], [rule])))[0]
    assert first.request_headers_to_add[0].header.key == "x-a"
    assert first.route.max_stream_duration.max_stream_duration.ToMilliseconds() == 1500
    assert first.route.retry_policy.retry_on == "unavailable"  # 500 is UNKNOWN, which gRPC does not retry
    assert first.route.retry_policy.num_retries.value == 3
    assert first.route.retry_policy.retry_back_off.base_interval.ToMilliseconds() == 100


def test_http_matches_no_grpc_call_can_satisfy_are_dropped():
    rule = {
        "matches": [{"method": "GET"}, {"queryParams": [{"name": "q", "value": "1"}]}, {"method": "POST"}],
        "backendRefs": [e.backend("greeter")],
    }
    names = [r.name for r in routes(translate(greeter(), e.http_route("r", [e.service_parent("greeter")], [rule])))]
    assert names == ["default/r/0/2", "default"]


def test_grpc_route_method_matches_become_paths():
    def rule(method: dict) -> dict:
        return {"matches": [{"method": method}], "backendRefs": [e.backend("greeter")]}

    route = e.grpc_route(
        "g",
        [e.service_parent("greeter")],
        [
            rule({"service": "pkg.Svc", "method": "Get"}),
            rule({"service": "pkg.Svc"}),
            rule({"method": "Get"}),
            rule({"type": "RegularExpression", "service": "pkg\\..*"}),
        ],
    )
    matches = [r.match for r in routes(translate(greeter(), route))]
    assert matches[0].path == "/pkg.Svc/Get" and matches[1].prefix == "/pkg.Svc/"
    assert {m.safe_regex.regex for m in matches[2:4]} == {"/[^/]+/Get", "/pkg\\..*/[^/]+"}


def test_gateway_routes_take_priority_over_virtual_services():
    route = e.http_route("r", [e.service_parent("greeter")], [{"backendRefs": [e.backend("greeter-a")]}])
    vs = e.virtual_service("v", ["greeter"], [{"route": [{"destination": {"host": "greeter-b"}}]}])
    names = [r.name for r in routes(translate(greeter(), *backends("a", "b"), route, vs))]
    assert names == ["default/r/0/0", "default"]


# --- VirtualService -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("abort", "code"),
    [
        ({"httpStatus": 503}, 14),  # UNAVAILABLE
        ({"httpStatus": 403}, 7),  # PERMISSION_DENIED
        ({"httpStatus": 418}, 2),  # UNKNOWN
        ({"grpcStatus": "RESOURCE_EXHAUSTED"}, 8),
    ],
)
def test_fault_aborts_carry_the_grpc_status(abort: dict, code: int):
    http = [
        {"fault": {"abort": {**abort, "percentage": {"value": 50}}}, "route": [{"destination": {"host": "greeter"}}]}
    ]
    first = routes(translate(greeter(), e.virtual_service("v", ["greeter"], http)))[0]
    assert fault_of(first).abort.grpc_status == code
    assert fault_of(first).abort.percentage == percent_pb2.FractionalPercent(
        numerator=500_000, denominator=percent_pb2.FractionalPercent.MILLION
    )
    assert destinations(first) == {cluster_of(): 1}  # one destination: `cluster`


def test_fault_delays_and_the_integer_percent():
    http = [
        {"fault": {"delay": {"fixedDelay": "300ms", "percent": 10}}, "route": [{"destination": {"host": "greeter"}}]}
    ]
    delay = fault_of(routes(translate(greeter(), e.virtual_service("v", ["greeter"], http)))[0]).delay
    assert delay.fixed_delay.ToMilliseconds() == 300 and delay.percentage.numerator == 100_000


def test_virtual_service_matches():
    http = [
        {
            "match": [
                {"uri": {"prefix": "/pkg."}, "headers": {"X-User": {"exact": "a"}}, "withoutHeaders": {"x-b": {}}},
                {"uri": {"regex": "/pkg\\..*"}, "ignoreUriCase": True},
                {"sourceLabels": {"app": "x"}},  # per client: cannot apply to a shared configuration
                {"port": 8080},  # another listener port
                {"method": {"exact": "GET"}},
            ],
            "route": [{"destination": {"host": "greeter-a"}}],
        }
    ]
    first, second, default = routes(translate(greeter(), *backends("a"), e.virtual_service("v", ["greeter"], http)))
    assert first.match.prefix == "/pkg." and [(h.name, h.invert_match) for h in first.match.headers] == [
        ("x-user", False),
        ("x-b", True),
    ]
    assert first.match.headers[1].present_match
    assert second.match.safe_regex.regex == "/pkg\\..*" and second.match.case_sensitive.value is False
    assert default.name == "default"


def test_virtual_service_timeout_retries_and_weights():
    http = [
        {
            "timeout": "2s",
            "retries": {"attempts": 2, "retryOn": "5xx,internal,retriable-4xx", "perTryTimeout": "0.5s"},
            "route": [
                {"destination": {"host": "greeter-a"}, "weight": 75},
                {"destination": {"host": "greeter-b.default.svc.cluster.local", "port": {"number": 80}}, "weight": 25},
            ],
        }
    ]
    first = routes(translate(greeter(), *backends("a", "b"), e.virtual_service("v", ["greeter"], http)))[0]
    assert first.route.max_stream_duration.grpc_timeout_header_max.seconds == 2
    assert first.route.retry_policy.retry_on == "unavailable,internal"
    assert first.route.retry_policy.num_retries.value == 2
    assert destinations(first) == {
        cluster_of("greeter-a.default.svc.cluster.local"): 75,
        cluster_of("greeter-b.default.svc.cluster.local"): 25,
    }


def test_virtual_services_for_gateways_only_or_other_hosts_do_not_apply():
    http = [{"route": [{"destination": {"host": "greeter-a"}}]}]
    t = translate(
        greeter(),
        *backends("a"),
        e.virtual_service("gw", ["greeter"], http, gateways=["istio-system/ingress"]),
        e.virtual_service("other", ["greeter.other.svc.cluster.local"], http),
    )
    assert [r.name for r in routes(t)] == ["default"]


def test_direct_responses_abort_and_redirects_are_skipped():
    http = [{"redirect": {"uri": "/x"}}, {"directResponse": {"status": 404}}]
    first, default = routes(translate(greeter(), e.virtual_service("v", ["greeter"], http)))
    assert fault_of(first).abort.grpc_status == 12 and default.name == "default"  # UNIMPLEMENTED


# --- DestinationRule ------------------------------------------------------------------------------


def test_consistent_hash_gives_ring_hash_and_a_hash_policy():
    dr = e.destination_rule(
        "d", "greeter", trafficPolicy={"loadBalancer": {"consistentHash": {"httpHeaderName": "X-User"}}}
    )
    t = translate(greeter(), dr)
    cluster = t.resources(CLUSTER)[cluster_of()]
    assert cluster.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert routes(t)[-1].route.hash_policy[0].header.header_name == "x-user"


def test_simple_policies_gRPC_cannot_run_are_round_robin():
    dr = e.destination_rule("d", "greeter", trafficPolicy={"loadBalancer": {"simple": "LEAST_REQUEST"}})
    assert translate(greeter(), dr).resources(CLUSTER)[cluster_of()].lb_policy == cluster_pb2.Cluster.ROUND_ROBIN


def test_subsets_get_clusters_of_the_endpoints_they_select_and_routes_can_use_them():
    subsets = [{"name": "v1", "labels": {"version": "a"}}, {"name": "v2", "labels": {"version": "b"}}]
    dr = e.destination_rule("d", "greeter", subsets=subsets)
    http = [
        {
            "match": [{"headers": {"x": {"exact": "1"}}}],
            "route": [{"destination": {"host": "greeter", "subset": "v3"}}],
        },
        {"route": [{"destination": {"host": "greeter", "subset": "v2"}}]},
    ]
    t = translate(greeter(), *backends("a", "b"), dr, e.virtual_service("v", ["greeter"], http))
    assert endpoints(t, cluster_of(subset="v1")) == [("127.0.0.2", 8080)]
    assert endpoints(t, cluster_of(subset="v2")) == [("127.0.0.3", 8080)]
    unknown_subset, v2, _ = routes(t)
    assert fault_of(unknown_subset).abort.grpc_status == 14
    assert destinations(v2) == {cluster_of(subset="v2"): 1}


# --- ServiceEntry ---------------------------------------------------------------------------------


def test_a_static_service_entry_serves_its_endpoints():
    se = o.service_entry(
        "ext",
        hosts=["api.example.com", "*.wild.example.com"],
        ports=[{"number": 443, "name": "grpc", "targetPort": 8443}],
        resolution="STATIC",
        endpoints=[
            {"address": "203.0.113.1"},
            {"address": "203.0.113.2", "ports": {"grpc": 9443}},
            {"address": "dns.name"},
        ],
    )
    t = translate(se)
    assert set(t.resources(LISTENER)) == {"api.example.com", "api.example.com:443"}
    assert endpoints(t, cluster_of("api.example.com", 443)) == [("203.0.113.1", 8443), ("203.0.113.2", 9443)]


def test_a_passthrough_service_entry_yields_nothing():
    se = o.service_entry("ext", hosts=["api.example.com"], ports=[{"number": 443, "name": "grpc"}], resolution="NONE")
    assert not translate(se).resources(LISTENER)


def test_a_service_wins_over_a_service_entry_for_the_same_host():
    se = o.service_entry(
        "shadow",
        hosts=[HOST],
        ports=[{"number": 80, "name": "grpc"}],
        resolution="STATIC",
        endpoints=[{"address": "203.0.113.9"}],
    )
    t = translate(greeter(), o.pod("a", ip="10.0.0.1", labels={"app": "greeter"}), se)
    assert endpoints(t) == [("10.0.0.1", 8080)]
