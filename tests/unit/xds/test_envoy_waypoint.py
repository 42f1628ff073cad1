"""A waypoint's Envoy configuration (docs/waypoint.md): the Listener `waypoint/{N}/{G}` with a chain
per bound Service port, RBAC and JWT filters from targetRefs policies, inbound-vip routes with the
HTTP features, clusters with DestinationRule settings, endpoints with their tunnel, and incremental
updates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import json_format

from services.xds.generators.envoy import EnvoyTranslator
from services.xds.generators.index import Translator
from services.xds.model import AUTHORIZATION_POLICIES, REQUEST_AUTHENTICATIONS, Key
from services.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.unit.xds import envoy_objects as e
from tests.unit.xds import objects as o

pytestmark = pytest.mark.unit

NS = "default"
LISTENER_NAME = "waypoint/default/waypoint"
REVIEWS = "reviews.default.svc.cluster.local"
REVIEWS_ROUTE = f"inbound-vip|9080|http|{REVIEWS}"
PORTS = [{"name": "http", "port": 9080, "targetPort": 9080}]
BOUND = {"istio.io/use-waypoint": "waypoint"}
ISSUER = "https://issuer.example"
JWKS = json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "k"}]})


def request_authentication(name: str, target: dict, **rule: Any) -> dict:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"targetRefs": [target], "jwtRules": [{"issuer": ISSUER, **rule}]},
    }


GATEWAY_REF = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}
SERVICE_REF = {"group": "", "kind": "Service", "name": "reviews"}


def base() -> list[dict]:
    return [
        o.namespace(NS),
        o.gateway("waypoint"),
        o.service("reviews", selector={"app": "reviews"}, ports=PORTS, cluster_ip="198.19.0.10", labels=BOUND),
        o.service("details", selector={"app": "details"}, ports=PORTS, cluster_ip="198.19.0.11", labels=BOUND),
        o.service("ratings", selector={"app": "ratings"}, ports=PORTS, cluster_ip="198.19.0.12"),
        o.service(
            "opted-out",
            selector={"app": "x"},
            ports=PORTS,
            cluster_ip="198.19.0.13",
            labels={"istio.io/use-waypoint": "none"},
        ),
        o.pod(
            "reviews-1",
            ip="198.18.1.1",
            labels={"app": "reviews", "version": "v1"},
            annotations={"ambient.istio.io/redirection": "enabled"},
            service_account="bookinfo-reviews",
        ),
        o.pod("reviews-2", ip="198.18.1.2", labels={"app": "reviews", "version": "v2"}),
        o.pod("ratings-1", ip="198.18.1.3", labels={"app": "ratings"}),
    ]


def translated(*extra: dict, jwks: Any = None) -> tuple[o.Cluster, EnvoyTranslator]:
    cluster = o.Cluster(*base(), *extra)
    translator = EnvoyTranslator(jwks=jwks) if jwks else EnvoyTranslator()
    translator.rebuild(cluster.store)
    return cluster, translator


def managers(translator: EnvoyTranslator) -> dict[str, hcm.HttpConnectionManager]:
    listener = translator.resources(LISTENER)[LISTENER_NAME]
    out = {}
    for chain in listener.filter_chains:
        manager = hcm.HttpConnectionManager()
        assert chain.filters[0].typed_config.Unpack(manager)
        out[chain.name] = manager
    return out


def typed(filter_: hcm.HttpFilter, message: Any) -> Any:
    assert filter_.typed_config.Unpack(message)
    return message


def test_the_listener_has_a_chain_per_bound_service_port() -> None:
    _, translator = translated()
    listener = translator.resources(LISTENER)[LISTENER_NAME]
    chains = {c.name: c for c in listener.filter_chains}
    assert set(chains) == {f"{REVIEWS}:9080", "details.default.svc.cluster.local:9080"}  # not ratings, not opted-out
    match = chains[f"{REVIEWS}:9080"].filter_chain_match
    assert [(p.address_prefix, p.prefix_len.value) for p in match.prefix_ranges] == [("198.19.0.10", 32)]
    assert match.destination_port.value == 9080
    manager = managers(translator)[f"{REVIEWS}:9080"]
    assert manager.codec_type == hcm.HttpConnectionManager.HTTP1  # port named http
    assert manager.rds.route_config_name == REVIEWS_ROUTE
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.fault", "envoy.filters.http.router"]
    assert REVIEWS_ROUTE in translator.resources(ROUTE)
    # The proxyless names are untouched and separate.
    assert f"{REVIEWS}:9080" in translator.resources(LISTENER)


def test_a_get_only_policy_for_sleep_becomes_an_allow_rbac_filter() -> None:
    policy = o.authorization_policy(
        "allow-get",
        targetRefs=[GATEWAY_REF],
        action="ALLOW",
        rules=[
            {
                "from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}],
                "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}],
            }
        ],
    )
    deny = o.authorization_policy(
        "deny-admin", targetRefs=[SERVICE_REF], action="DENY", rules=[{"to": [{"operation": {"paths": ["/admin"]}}]}]
    )
    _, translator = translated(policy, deny)
    reviews = managers(translator)[f"{REVIEWS}:9080"]
    names = [f.name for f in reviews.http_filters]
    assert names == ["envoy.filters.http.rbac"] * 2 + ["envoy.filters.http.fault", "envoy.filters.http.router"]
    denied = typed(reviews.http_filters[0], rbac_filter.RBAC()).rules
    allowed = typed(reviews.http_filters[1], rbac_filter.RBAC()).rules
    assert denied.action == rbac.RBAC.DENY and set(denied.policies) == {"default.deny-admin"}
    assert allowed.action == rbac.RBAC.ALLOW and set(allowed.policies) == {"default.allow-get"}
    rule = allowed.policies["default.allow-get"]
    (principal,) = rule.principals
    assert principal.authenticated.principal_name.exact == "spiffe://cluster.local/ns/default/sa/sleep"
    (permission,) = rule.permissions
    method, path = permission.and_rules.rules
    assert method.header.name == ":method" and method.header.string_match.exact == "GET"
    assert path.url_path.path.prefix == "/api/"
    # The Service-targeted DENY applies only to that Service's chain.
    details = managers(translator)["details.default.svc.cluster.local:9080"]
    (only,) = [typed(f, rbac_filter.RBAC()).rules for f in details.http_filters if f.name.endswith("rbac")]
    assert only.action == rbac.RBAC.ALLOW


def test_an_allow_policy_without_rules_denies_everything_and_custom_is_not_translated() -> None:
    nothing = o.authorization_policy("allow-nothing", targetRefs=[GATEWAY_REF])
    custom = o.authorization_policy(
        "ext", targetRefs=[GATEWAY_REF], action="CUSTOM", provider={"name": "x"}, rules=[{}]
    )
    _, translator = translated(nothing, custom)
    filters = managers(translator)[f"{REVIEWS}:9080"].http_filters
    (only,) = [typed(f, rbac_filter.RBAC()).rules for f in filters if f.name.endswith("rbac")]
    assert only.action == rbac.RBAC.ALLOW and not only.policies  # ALLOW with nothing allowed


def test_source_namespaces_request_principals_and_claims() -> None:
    policy = o.authorization_policy(
        "who",
        targetRefs=[GATEWAY_REF],
        rules=[
            {
                "from": [{"source": {"namespaces": ["foo"], "requestPrincipals": [f"{ISSUER}/alice"]}}],
                "when": [{"key": "request.auth.claims[group]", "values": ["admin"]}],
            }
        ],
    )
    _, translator = translated(policy)
    filters = managers(translator)[f"{REVIEWS}:9080"].http_filters
    rules = typed(filters[0], rbac_filter.RBAC()).rules
    (principal,) = rules.policies["default.who"].principals
    source, claim = principal.and_ids.ids  # the `from` source AND the `when` condition
    namespace, request_principal = source.and_ids.ids
    assert namespace.authenticated.principal_name.safe_regex.regex == "spiffe://[^/]+/ns/foo/sa/.*"
    iss, sub = request_principal.and_ids.ids
    iss_matcher = iss.or_ids.ids[0].metadata
    assert iss_matcher.filter == "envoy.filters.http.jwt_authn"
    assert [s.key for s in iss_matcher.path] == ["payload", "iss"] and iss_matcher.value.string_match.exact == ISSUER
    assert sub.or_ids.ids[0].metadata.value.string_match.exact == "alice"
    assert [s.key for s in claim.or_ids.ids[1].metadata.path] == ["payload", "group"]


def test_a_request_authentication_adds_a_jwt_provider_first() -> None:
    ra = request_authentication("jwt", SERVICE_REF, jwks=JWKS, audiences=["bookinfo"])
    _, translator = translated(ra)
    filters = managers(translator)[f"{REVIEWS}:9080"].http_filters
    assert filters[0].name == "envoy.filters.http.jwt_authn"
    config = typed(filters[0], jwt.JwtAuthentication())
    provider = config.providers["default.jwt.0"]
    assert provider.issuer == ISSUER and list(provider.audiences) == ["bookinfo"]
    assert provider.local_jwks.inline_string == JWKS and provider.forward and provider.payload_in_metadata == "payload"
    (rule,) = config.rules
    assert rule.match.prefix == "/"
    requirements = rule.requires.requires_any.requirements
    assert [r.provider_name for r in requirements[:-1]] == ["default.jwt.0"]
    assert requirements[-1].HasField("allow_missing")
    # details is not targeted
    assert "envoy.filters.http.jwt_authn" not in [
        f.name for f in managers(translator)["details.default.svc.cluster.local:9080"].http_filters
    ]


def test_a_jwks_uri_is_inlined_when_fetched_and_fails_closed_with_a_condition_otherwise() -> None:
    documents: dict[str, str] = {}
    ra = request_authentication("remote", SERVICE_REF, jwksUri="https://issuer.example/jwks")
    cluster, translator = translated(ra, jwks=documents.get)

    def provider() -> jwt.JwtProvider:
        filters = managers(translator)[f"{REVIEWS}:9080"].http_filters
        return typed(filters[0], jwt.JwtAuthentication()).providers["default.remote.0"]

    unverifiable = json.loads(provider().local_jwks.inline_string)
    assert unverifiable["keys"][0]["kid"] == "mesh-unavailable"
    key = Key(REQUEST_AUTHENTICATIONS, NS, "remote")
    (condition,) = translator.conditions[key]
    assert condition["status"] == "False" and "https://issuer.example/jwks" in condition["message"]
    documents["https://issuer.example/jwks"] = JWKS
    deltas = translator.jwks_changed(cluster.store, ["https://issuer.example/jwks"])
    assert set(deltas.listeners.updated) == {LISTENER_NAME}
    assert provider().local_jwks.inline_string == JWKS
    assert key in deltas.conditions_changed and key not in translator.conditions


VS_RETRIES = {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,gateway-error,429"}


def traffic_objects() -> list[dict]:
    dr = e.destination_rule(
        "reviews",
        "reviews",
        trafficPolicy={
            "loadBalancer": {"simple": "LEAST_CONN"},
            "connectionPool": {
                "tcp": {"maxConnections": 10},
                "http": {"http1MaxPendingRequests": 5, "http2MaxRequests": 20, "maxRetries": 4},
            },
            "outlierDetection": {
                "consecutive5xxErrors": 3,
                "interval": "10s",
                "baseEjectionTime": "30s",
                "maxEjectionPercent": 50,
            },
        },
        subsets=[
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}},
        ],
    )
    vs = e.virtual_service(
        "reviews",
        ["reviews"],
        [
            {
                "match": [{"method": {"exact": "POST"}, "queryParams": {"debug": {"exact": "1"}}}],
                "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 25}}},
                "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
            },
            {
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
                ],
                "timeout": "5s",
                "retries": VS_RETRIES,
                "fault": {"delay": {"fixedDelay": "100ms", "percentage": {"value": 10}}},
                "mirror": {"host": "ratings"},
                "mirrorPercentage": {"value": 5},
                "headers": {"request": {"set": {"x-a": "1"}, "remove": ["x-b"]}, "response": {"add": {"x-c": "2"}}},
            },
        ],
    )
    return [dr, vs]


def test_virtual_service_routes_with_weights_retries_fault_mirror_and_headers() -> None:
    _, translator = translated(*traffic_objects())
    routes = translator.resources(ROUTE)[REVIEWS_ROUTE].virtual_hosts[0].routes
    first, split, default = routes
    assert [h.name for h in first.match.headers] == [":method"]
    assert first.match.query_parameters[0].name == "debug"
    assert first.match.query_parameters[0].string_match.exact == "1"
    abort = fault_pb2.HTTPFault()
    assert first.typed_per_filter_config["envoy.filters.http.fault"].Unpack(abort)
    assert abort.abort.http_status == 418 and abort.abort.percentage.numerator == 250_000
    weights = {c.name: c.weight.value for c in split.route.weighted_clusters.clusters}
    assert weights == {f"inbound-vip|9080|v1|{REVIEWS}": 90, f"inbound-vip|9080|v2|{REVIEWS}": 10}
    retry = split.route.retry_policy
    assert retry.retry_on == "5xx,gateway-error,retriable-status-codes" and list(retry.retriable_status_codes) == [429]
    assert retry.num_retries.value == 3 and retry.per_try_timeout.seconds == 2
    assert split.route.timeout.seconds == 5
    (mirror,) = split.route.request_mirror_policies
    assert mirror.cluster == "inbound-vip|9080||ratings.default.svc.cluster.local"
    assert mirror.runtime_fraction.default_value.numerator == 50_000
    delay = fault_pb2.HTTPFault()
    assert split.typed_per_filter_config["envoy.filters.http.fault"].Unpack(delay)
    assert delay.delay.fixed_delay.ToMilliseconds() == 100
    assert [h.header.key for h in split.request_headers_to_add] == ["x-a"]
    assert list(split.request_headers_to_remove) == ["x-b"]
    assert [h.header.key for h in split.response_headers_to_add] == ["x-c"]
    # Istio's default retries on the catch-all route.
    assert default.route.cluster == f"inbound-vip|9080||{REVIEWS}"
    assert default.route.retry_policy.retry_on == (
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    )
    assert list(default.route.retry_policy.retriable_status_codes) == [503]
    assert default.route.retry_policy.num_retries.value == 2
    # Every cluster a route names (mirror included) is served, with its endpoints.
    for name in (*weights, mirror.cluster):
        assert name in translator.resources(CLUSTER) and name in translator.resources(ENDPOINT)


def test_http_route_method_query_mirror_and_header_modifiers() -> None:
    route = e.http_route(
        "r",
        [e.service_parent("reviews")],
        [
            {
                "matches": [{"method": "GET", "queryParams": [{"name": "q", "value": "x"}]}],
                "filters": [
                    {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "ratings", "port": 9080}}},
                    {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["server"]}},
                ],
                "timeouts": {"request": "3s"},
                "backendRefs": [e.backend("reviews", port=9080)],
            }
        ],
    )
    _, translator = translated(route)
    first = translator.resources(ROUTE)[REVIEWS_ROUTE].virtual_hosts[0].routes[0]
    assert (first.match.headers[0].name, first.match.headers[0].string_match.exact) == (":method", "GET")
    assert first.match.query_parameters[0].name == "q"
    assert first.route.request_mirror_policies[0].cluster == "inbound-vip|9080||ratings.default.svc.cluster.local"
    assert list(first.response_headers_to_remove) == ["server"]
    assert first.route.timeout.seconds == 3


def test_clusters_take_load_balancing_circuit_breakers_and_outlier_detection() -> None:
    _, translator = translated(*traffic_objects())
    clusters = translator.resources(CLUSTER)
    main = clusters[f"inbound-vip|9080||{REVIEWS}"]
    assert main.type == cluster_pb2.Cluster.EDS and main.eds_cluster_config.eds_config.HasField("ads")
    assert main.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    (threshold,) = main.circuit_breakers.thresholds
    assert (threshold.max_connections.value, threshold.max_pending_requests.value) == (10, 5)
    assert (threshold.max_requests.value, threshold.max_retries.value) == (20, 4)
    outlier = main.outlier_detection
    assert outlier.consecutive_5xx.value == 3 and outlier.interval.seconds == 10
    assert outlier.base_ejection_time.seconds == 30 and outlier.max_ejection_percent.value == 50
    assert clusters[f"inbound-vip|9080|v2|{REVIEWS}"].lb_policy == cluster_pb2.Cluster.RANDOM
    # Istio's 0 %: an ejected endpoint stays out even when it was the last one.
    assert main.common_lb_config.HasField("healthy_panic_threshold")
    assert main.common_lb_config.healthy_panic_threshold.value == 0


def test_endpoints_carry_their_tunnel_and_identity() -> None:
    _, translator = translated(*traffic_objects())
    cla = translator.resources(ENDPOINT)[f"inbound-vip|9080||{REVIEWS}"]
    found = {
        lb.endpoint.address.socket_address.address: json_format.MessageToDict(lb.metadata.filter_metadata["istio"])
        for lb in cla.endpoints[0].lb_endpoints
    }
    assert found == {
        "198.18.1.1": {
            "tunnel": "hbone",
            "identity": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
            "workload": "reviews-1",
            "namespace": "default",
        },
        "198.18.1.2": {
            "tunnel": "plaintext",
            "identity": "spiffe://cluster.local/ns/default/sa/default",
            "workload": "reviews-2",
            "namespace": "default",
        },
    }
    v1 = translator.resources(ENDPOINT)[f"inbound-vip|9080|v1|{REVIEWS}"]
    assert [lb.endpoint.address.socket_address.address for lb in v1.endpoints[0].lb_endpoints] == ["198.18.1.1"]


def test_a_pod_change_updates_only_the_endpoints_it_is_in() -> None:
    cluster, translator = translated(*traffic_objects())
    change = cluster.apply(
        o.pod(
            "reviews-2",
            ip="198.18.1.2",
            labels={"app": "reviews", "version": "v2"},
            annotations={"ambient.istio.io/redirection": "enabled"},
        )
    )
    deltas = translator.update(cluster.store, [change])
    waypoint_names = {n for n in deltas.endpoints.updated if n.startswith("inbound-vip")}
    assert waypoint_names == {f"inbound-vip|9080||{REVIEWS}", f"inbound-vip|9080|v2|{REVIEWS}"}
    assert not deltas.listeners.updated and not deltas.routes.updated and not deltas.clusters.updated


def test_binding_and_unbinding_a_service_adds_and_removes_its_chain() -> None:
    cluster, translator = translated()
    labelled = o.service("ratings", selector={"app": "ratings"}, ports=PORTS, cluster_ip="198.19.0.12", labels=BOUND)
    deltas = translator.update(cluster.store, [cluster.apply(labelled)])
    assert LISTENER_NAME in deltas.listeners.updated
    assert "inbound-vip|9080|http|ratings.default.svc.cluster.local" in deltas.routes.updated
    chains = {c.name for c in translator.resources(LISTENER)[LISTENER_NAME].filter_chains}
    assert "ratings.default.svc.cluster.local:9080" in chains
    unlabelled = o.service("ratings", selector={"app": "ratings"}, ports=PORTS, cluster_ip="198.19.0.12")
    deltas = translator.update(cluster.store, [cluster.apply(unlabelled)])
    assert "inbound-vip|9080|http|ratings.default.svc.cluster.local" in deltas.routes.removed
    # A namespace label binds every Service of the namespace that does not opt out.
    deltas = translator.update(cluster.store, [cluster.apply(o.namespace(NS, labels=BOUND))])
    chains = {c.name for c in translator.resources(LISTENER)[LISTENER_NAME].filter_chains}
    assert "ratings.default.svc.cluster.local:9080" in chains
    assert "opted-out.default.svc.cluster.local:9080" not in chains


def test_a_policy_change_retranslates_the_waypoint_and_readers_follow_the_service_account() -> None:
    cluster, translator = translated()
    assert translator.readers((LISTENER, LISTENER_NAME)) == {(NS, "waypoint")}
    assert translator.readers((CLUSTER, f"inbound-vip|9080||{REVIEWS}")) == {(NS, "waypoint")}
    policy = o.authorization_policy("p", targetRefs=[SERVICE_REF], action="DENY", rules=[{}])
    deltas = translator.update(cluster.store, [cluster.apply(policy)])
    assert set(deltas.listeners.updated) == {LISTENER_NAME}
    gateway = o.gateway("waypoint")
    gateway["metadata"]["annotations"] = {"gateway.istio.io/service-account": "custom"}
    deltas = translator.update(cluster.store, [cluster.apply(gateway)])
    assert translator.readers((LISTENER, LISTENER_NAME)) == {(NS, "custom")}
    assert LISTENER_NAME in deltas.access_changed[LISTENER]


def test_a_gateway_that_is_not_a_waypoint_serves_nothing() -> None:
    _, translator = translated(o.gateway("ingress", class_name="istio"))
    assert "waypoint/default/ingress" not in translator.resources(LISTENER)


def test_a_custom_policy_is_reported_not_accepted() -> None:
    custom = o.authorization_policy("ext", targetRefs=[GATEWAY_REF], action="CUSTOM", provider={"name": "x"})
    cluster = o.Cluster(*base(), custom)
    translator = Translator()
    translator.rebuild(cluster.store)
    (condition,) = translator.conditions[Key(AUTHORIZATION_POLICIES, NS, "ext")]
    assert condition["type"] == "WaypointAccepted" and condition["status"] == "False"
    assert "CUSTOM" in condition["message"]
