"""Unit tests for dataplane.waypoint.l7.routing (and the header modifications of headers.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from dataplane.waypoint.l7.headers import HeaderMutation, apply
from dataplane.waypoint.l7.model import ConfigError
from dataplane.waypoint.l7.routing import DEFAULT_TIMEOUT_SECONDS, RouteTable

from .l7_requests import make_request

pytestmark = pytest.mark.unit

CATCH_ALL = rc_pb2.Route(
    name="default", match=rc_pb2.RouteMatch(prefix="/"), route=rc_pb2.RouteAction(cluster="inbound-vip|9080||reviews")
)


def table(*routes: rc_pb2.Route, domains=("*",), **vhost_fields) -> RouteTable:
    vhost = rc_pb2.VirtualHost(name="reviews", domains=list(domains), routes=list(routes), **vhost_fields)
    return RouteTable(route_pb2.RouteConfiguration(name="inbound-vip|9080|http|reviews", virtual_hosts=[vhost]))


def to(cluster: str, name: str = "r", **match) -> rc_pb2.Route:
    return rc_pb2.Route(name=name, match=rc_pb2.RouteMatch(**match), route=rc_pb2.RouteAction(cluster=cluster))


def cluster_for(t: RouteTable, **request) -> str | None:
    decision = t.route(make_request(**request), random.Random(1))
    return decision.cluster if decision else None


# --- virtual hosts ---------------------------------------------------------------------------------


def test_virtual_host_selection_order():
    def vh(name: str, *domains: str) -> rc_pb2.VirtualHost:
        return rc_pb2.VirtualHost(name=name, domains=list(domains), routes=[to(name, prefix="/")])

    config = route_pb2.RouteConfiguration(
        virtual_hosts=[
            vh("default", "*"),
            vh("prefix", "reviews.*"),
            vh("short-suffix", "*.svc.cluster.local"),
            vh("long-suffix", "*.default.svc.cluster.local"),
            vh("exact", "reviews.default.svc.cluster.local"),
        ]
    )
    t = RouteTable(config)
    assert cluster_for(t, authority="reviews.default.svc.cluster.local:9080") == "exact"  # port stripped
    assert cluster_for(t, authority="Ratings.default.svc.cluster.local") == "long-suffix"
    assert cluster_for(t, authority="ratings.other.svc.cluster.local") == "short-suffix"
    assert cluster_for(t, authority="reviews.example") == "prefix"
    assert cluster_for(t, authority="198.18.0.10:9080") == "default"


def test_no_matching_virtual_host_or_route():
    t = table(to("c", path="/only"), domains=("reviews",))
    assert t.route(make_request(authority="ratings"), random.Random(0)) is None
    assert t.route(make_request(authority="reviews", path="/other"), random.Random(0)) is None


# --- route matching ------------------------------------------------------------------------------


def test_routes_in_order_with_path_kinds():
    t = table(
        to("exact", path="/api/v1"),
        to("separated", path_separated_prefix="/api"),
        to("regex", safe_regex=regex_pb2.RegexMatcher(regex="/items/[0-9]+")),
        to("prefix", prefix="/"),
    )
    assert cluster_for(t, path="/api/v1?x=1") == "exact"
    assert cluster_for(t, path="/api") == "separated"
    assert cluster_for(t, path="/api/v2") == "separated"
    assert cluster_for(t, path="/apiv2") == "prefix"  # path_separated_prefix needs a "/" boundary
    assert cluster_for(t, path="/items/42?full=1") == "regex"
    assert cluster_for(t, path="/items/42x") == "prefix"  # the regex must match the whole path


def test_case_insensitive_prefix():
    t = table(to("ci", prefix="/API", case_sensitive=wrappers_pb2.BoolValue(value=False)))
    assert cluster_for(t, path="/api/x") == "ci"
    assert cluster_for(table(to("cs", prefix="/API")), path="/api/x") is None


def test_header_matchers():
    t = table(
        to(
            "v2",
            prefix="/",
            headers=[
                rc_pb2.HeaderMatcher(name="end-user", string_match=string_pb2.StringMatcher(exact="jason")),
                rc_pb2.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="GET")),
            ],
        ),
        to("legacy", prefix="/", headers=[rc_pb2.HeaderMatcher(name="x-canary", exact_match="yes")]),
        to(
            "not-beta",
            prefix="/",
            headers=[rc_pb2.HeaderMatcher(name="x-beta", present_match=True, invert_match=True)],
        ),
        CATCH_ALL,
    )
    assert cluster_for(t, headers=[("end-user", "jason")]) == "v2"
    assert cluster_for(t, method="POST", headers=[("end-user", "jason"), ("x-beta", "1")]) == CATCH_ALL.route.cluster
    assert cluster_for(t, headers=[("x-canary", "yes"), ("x-beta", "1")]) == "legacy"
    assert cluster_for(t, headers=[("end-user", "bob")]) == "not-beta"


def test_query_parameter_matchers():
    t = table(
        to(
            "debug",
            prefix="/",
            query_parameters=[
                rc_pb2.QueryParameterMatcher(name="debug", present_match=True),
                rc_pb2.QueryParameterMatcher(name="user", string_match=string_pb2.StringMatcher(prefix="adm")),
            ],
        ),
        CATCH_ALL,
    )
    assert cluster_for(t, path="/x?debug&user=admin%20x") == "debug"
    assert cluster_for(t, path="/x?user=admin") == CATCH_ALL.route.cluster
    assert cluster_for(t, path="/x?debug=1&user=bob") == CATCH_ALL.route.cluster


# --- actions ---------------------------------------------------------------------------------------


def weighted(*pairs: tuple[str, int]) -> rc_pb2.Route:
    clusters = [
        rc_pb2.WeightedCluster.ClusterWeight(name=n, weight=wrappers_pb2.UInt32Value(value=w)) for n, w in pairs
    ]
    return rc_pb2.Route(
        name="split",
        match=rc_pb2.RouteMatch(prefix="/"),
        route=rc_pb2.RouteAction(weighted_clusters=rc_pb2.WeightedCluster(clusters=clusters)),
    )


def test_weighted_split_90_10():
    t = table(weighted(("v1", 90), ("v2", 10), ("v3", 0)))
    rng = random.Random(7)
    counts = Counter(t.route(make_request(), rng).cluster for _ in range(10_000))
    assert counts["v3"] == 0
    assert abs(counts["v2"] / 10_000 - 0.10) < 0.015
    assert counts["v1"] + counts["v2"] == 10_000


def test_weighted_split_is_deterministic_for_a_seed():
    t = table(weighted(("a", 50), ("b", 50)))
    first = [t.route(make_request(), random.Random(3)).cluster for _ in range(5)]
    assert len(set(first)) == 1  # the same seed gives the same draw


def test_timeout_retry_and_vhost_fallbacks():
    vhost_retry = rc_pb2.RetryPolicy(retry_on="connect-failure", num_retries=wrappers_pb2.UInt32Value(value=2))
    route_retry = rc_pb2.RetryPolicy(retry_on="5xx")
    with_policy = rc_pb2.Route(
        name="p",
        match=rc_pb2.RouteMatch(prefix="/p"),
        route=rc_pb2.RouteAction(cluster="c", timeout=duration_pb2.Duration(seconds=3), retry_policy=route_retry),
    )
    no_timeout = rc_pb2.Route(
        name="z",
        match=rc_pb2.RouteMatch(prefix="/z"),
        route=rc_pb2.RouteAction(cluster="c", timeout=duration_pb2.Duration()),
    )
    t = table(with_policy, no_timeout, CATCH_ALL, retry_policy=vhost_retry)
    rng = random.Random(0)
    p = t.route(make_request(path="/p"), rng)
    assert p.timeout == 3.0 and p.retry.retry_on == {"5xx"}
    z = t.route(make_request(path="/z"), rng)
    assert z.timeout is None and z.retry.retry_on == {"connect-failure"} and z.retry.num_retries == 2
    assert t.route(make_request(path="/"), rng).timeout == DEFAULT_TIMEOUT_SECONDS


def test_mirror_sampling():
    half = rc_pb2.RouteAction.RequestMirrorPolicy(
        cluster="shadow",
        runtime_fraction=base_pb2.RuntimeFractionalPercent(
            default_value=percent_pb2.FractionalPercent(numerator=50, denominator=percent_pb2.FractionalPercent.HUNDRED)
        ),
    )
    always = rc_pb2.RouteAction.RequestMirrorPolicy(cluster="audit")
    route = rc_pb2.Route(
        match=rc_pb2.RouteMatch(prefix="/"),
        route=rc_pb2.RouteAction(cluster="c", request_mirror_policies=[half, always]),
    )
    t = table(route)
    rng = random.Random(11)
    decisions = [t.route(make_request(), rng).mirror_clusters for _ in range(2000)]
    assert all("audit" in d for d in decisions)
    shadowed = sum("shadow" in d for d in decisions)
    assert 900 < shadowed < 1100


def test_direct_response_and_redirect():
    direct = rc_pb2.Route(
        name="teapot",
        match=rc_pb2.RouteMatch(prefix="/tea"),
        direct_response=rc_pb2.DirectResponseAction(
            status=418, body=base_pb2.DataSource(inline_string="short and stout")
        ),
    )
    redirect = rc_pb2.Route(
        name="moved",
        match=rc_pb2.RouteMatch(prefix="/old"),
        redirect=rc_pb2.RedirectAction(prefix_rewrite="/new", response_code=rc_pb2.RedirectAction.FOUND),
    )
    t = table(direct, redirect)
    teapot = t.route(make_request(path="/tea"), random.Random(0))
    assert teapot.cluster is None and teapot.direct_response.status == 418
    assert teapot.direct_response.body == "short and stout"
    moved = t.route(make_request(path="/old/a?q=1", authority="reviews:9080"), random.Random(0))
    assert moved.direct_response.status == 302
    assert dict(moved.direct_response.headers)["location"] == "http://reviews:9080/new/a?q=1"


def test_path_and_host_rewrites():
    route = rc_pb2.Route(
        match=rc_pb2.RouteMatch(prefix="/v1/"),
        route=rc_pb2.RouteAction(cluster="c", prefix_rewrite="/api/", host_rewrite_literal="backend"),
    )
    decision = table(route).route(make_request(path="/v1/items?x=1"), random.Random(0))
    assert decision.path == "/api/items?x=1" and decision.authority == "backend"


def test_fault_from_typed_per_filter_config():
    fault = fault_pb2.HTTPFault(
        abort=fault_pb2.FaultAbort(http_status=503, percentage=percent_pb2.FractionalPercent(numerator=100)),
        delay=common_fault_pb2.FaultDelay(fixed_delay=duration_pb2.Duration(seconds=2)),
    )
    packed = any_pb2.Any()
    packed.Pack(fault)
    route = rc_pb2.Route(
        match=rc_pb2.RouteMatch(prefix="/"),
        route=rc_pb2.RouteAction(cluster="c"),
        typed_per_filter_config={"envoy.filters.http.fault": packed},
    )
    decision = table(route).route(make_request(), random.Random(0))
    assert decision.fault == fault
    assert table(CATCH_ALL).route(make_request(), random.Random(0)).fault is None


def test_header_modifications_in_envoy_order():
    def hvo(
        key: str, value: str, action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    ) -> base_pb2.HeaderValueOption:
        return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=action)

    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    route = rc_pb2.Route(
        match=rc_pb2.RouteMatch(prefix="/"),
        route=rc_pb2.RouteAction(cluster="c"),
        request_headers_to_add=[hvo("x-route", "1"), hvo("x-level", "route", overwrite)],
        request_headers_to_remove=["x-secret"],
        response_headers_to_add=[hvo("x-served-by", "waypoint")],
        response_headers_to_remove=["server"],
    )
    t = table(route, request_headers_to_add=[hvo("x-level", "vhost", overwrite)])
    decision = t.route(make_request(), random.Random(0))
    sent = decision.apply_request_headers([("x-secret", "s"), ("x-route", "0"), ("accept", "*/*")])
    assert sent == [("x-route", "0"), ("accept", "*/*"), ("x-route", "1"), ("x-level", "vhost")]
    back = decision.apply_response_headers([("server", "app"), ("content-length", "0")])
    assert back == [("content-length", "0"), ("x-served-by", "waypoint")]


def test_header_append_actions():
    def mutation(action: int, value: str = "new") -> HeaderMutation:
        option = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="X-A", value=value), append_action=action)
        return HeaderMutation.from_proto([option], [])

    base = [("x-a", "old"), ("x-a", "older")]
    action = base_pb2.HeaderValueOption
    assert apply(base, [mutation(action.ADD_IF_ABSENT)]) == base
    assert apply([], [mutation(action.ADD_IF_ABSENT)]) == [("x-a", "new")]
    assert apply(base, [mutation(action.OVERWRITE_IF_EXISTS_OR_ADD)]) == [("x-a", "new")]
    assert apply([], [mutation(action.OVERWRITE_IF_EXISTS)]) == []
    assert apply(base, [mutation(action.APPEND_IF_EXISTS_OR_ADD, value="")]) == base  # empty value skipped
    legacy = base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key="x-a", value="v"), append=wrappers_pb2.BoolValue(value=False)
    )
    assert apply(base, [HeaderMutation.from_proto([legacy], [])]) == [("x-a", "v")]
    assert apply([(":path", "/")], [HeaderMutation(remove=(":path",))]) == [(":path", "/")]


def test_unsupported_match_is_refused():
    with pytest.raises(ConfigError):
        table(
            rc_pb2.Route(
                match=rc_pb2.RouteMatch(prefix="/", tls_context=rc_pb2.RouteMatch.TlsContextMatchOptions()),
                route=rc_pb2.RouteAction(cluster="c"),
            )
        )
