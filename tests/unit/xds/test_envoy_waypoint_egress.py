"""Egress through a waypoint: a ServiceEntry for an external host, with its own address, bound by
`istio.io/use-waypoint` to a waypoint in namespace istio-egress. mesh-xds gives the waypoint a
chain for the entry's address and port, a cluster whose endpoints are the entry's (plain TCP:
they are not in the mesh), and the RBAC of policies targeting that Gateway; ztunnel sends
traffic for the address to the waypoint."""

from __future__ import annotations

import pytest
from envoy.config.rbac.v3 import rbac_pb2 as rbac
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import json_format

from dataplane.ztunnel.state import ADDRESS_TYPE_URL, StateStore
from dataplane.ztunnel.state.outbound import Route, decide
from services.xds.generators.envoy import EnvoyTranslator
from services.xds.generators.services import service_entry_services
from services.xds.generators.view import IndexedView
from services.xds.types import ENDPOINT, LISTENER, ROUTE
from tests.unit.xds import objects as o
from tests.unit.ztunnel import builders as b

pytestmark = pytest.mark.unit

EGRESS_NS = "istio-egress"
LISTENER_NAME = f"waypoint/{EGRESS_NS}/egress-gateway"
GATEWAY_IP = "198.19.0.100"
SE_VIP, HOST = "198.19.200.10", "external.example"
EXTERNAL_IP = "203.0.113.7"  # TEST-NET-3: outside the mesh
CHAIN = f"{HOST}:80"
CLUSTER = f"inbound-vip|80||{HOST}"
SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
BOUND = {"istio.io/use-waypoint": "egress-gateway", "istio.io/use-waypoint-namespace": EGRESS_NS}
GATEWAY_REF = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "egress-gateway"}


def service_entry(labels: dict[str, str] = BOUND) -> dict:
    return o.service_entry(
        "external",
        labels=labels,
        hosts=[HOST],
        addresses=[SE_VIP],
        ports=[{"number": 80, "name": "http", "protocol": "HTTP"}],
        resolution="STATIC",
        endpoints=[{"address": EXTERNAL_IP}],
    )


def only_sleep(ns: str = EGRESS_NS) -> dict:
    return o.authorization_policy(
        "only-sleep",
        ns=ns,
        targetRefs=[GATEWAY_REF],
        action="ALLOW",
        rules=[{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}],
    )


def objects(*extra: dict) -> list[dict]:
    return [
        o.namespace("default"),
        o.namespace(EGRESS_NS),
        o.gateway("egress-gateway", ns=EGRESS_NS, address=GATEWAY_IP, allowed_from="All"),
        service_entry(),
        *extra,
    ]


def translated(*extra: dict) -> EnvoyTranslator:
    translator = EnvoyTranslator()
    translator.rebuild(o.Cluster(*objects(*extra)).store)
    return translator


def manager(translator: EnvoyTranslator, listener: str = LISTENER_NAME) -> hcm.HttpConnectionManager:
    chains = {c.name: c for c in translator.resources(LISTENER)[listener].filter_chains}
    out = hcm.HttpConnectionManager()
    assert chains[CHAIN].filters[0].typed_config.Unpack(out)
    return out


def test_the_waypoint_gets_a_chain_for_the_entry_address_and_port() -> None:
    translator = translated()
    (chain,) = translator.resources(LISTENER)[LISTENER_NAME].filter_chains
    assert chain.name == CHAIN
    match = chain.filter_chain_match
    assert [(p.address_prefix, p.prefix_len.value) for p in match.prefix_ranges] == [(SE_VIP, 32)]
    assert match.destination_port.value == 80
    http = manager(translator)
    assert http.codec_type == hcm.HttpConnectionManager.HTTP1  # protocol HTTP
    assert http.rds.route_config_name == f"inbound-vip|80|http|{HOST}"
    routes = translator.resources(ROUTE)[f"inbound-vip|80|http|{HOST}"]
    assert routes.virtual_hosts[0].routes[-1].route.cluster == CLUSTER


def test_the_cluster_endpoints_are_the_entry_endpoints_in_plaintext() -> None:
    assignment = translated().resources(ENDPOINT)[CLUSTER]
    (endpoint,) = [lb for locality in assignment.endpoints for lb in locality.lb_endpoints]
    socket = endpoint.endpoint.address.socket_address
    assert (socket.address, socket.port_value) == (EXTERNAL_IP, 80)
    istio = json_format.MessageToDict(endpoint.metadata.filter_metadata["istio"])
    assert istio == {"tunnel": "plaintext", "identity": ""}  # no workload: not a pod


def test_a_policy_targeting_the_egress_gateway_allows_only_sleep() -> None:
    http = manager(translated(only_sleep()))
    names = [f.name for f in http.http_filters]
    assert names == ["envoy.filters.http.rbac", "envoy.filters.http.fault", "envoy.filters.http.router"]
    config = rbac_filter.RBAC()
    assert http.http_filters[0].typed_config.Unpack(config)
    assert config.rules.action == rbac.RBAC.ALLOW
    assert set(config.rules.policies) == {f"{EGRESS_NS}.only-sleep"}
    (principal,) = config.rules.policies[f"{EGRESS_NS}.only-sleep"].principals
    ids = principal.and_ids.ids if principal.HasField("and_ids") else [principal]
    assert [p.authenticated.principal_name.exact for p in ids] == [SLEEP]


def test_a_policy_in_another_namespace_does_not_apply() -> None:
    http = manager(translated(only_sleep(ns="default")))
    assert [f.name for f in http.http_filters] == ["envoy.filters.http.fault", "envoy.filters.http.router"]


def test_a_waypoint_in_the_entry_namespace_needs_no_namespace_label() -> None:
    local = {"istio.io/use-waypoint": "egress-gateway"}
    translator = EnvoyTranslator()
    cluster = o.Cluster(o.namespace("default"), o.gateway("egress-gateway"), service_entry(local))
    translator.rebuild(cluster.store)
    chains = translator.resources(LISTENER)["waypoint/default/egress-gateway"].filter_chains
    assert [c.name for c in chains] == [CHAIN]


def test_unbound_when_the_gateway_does_not_admit_the_namespace() -> None:
    translator = EnvoyTranslator()
    gateway = o.gateway("egress-gateway", ns=EGRESS_NS, address=GATEWAY_IP)  # allowedRoutes: Same
    translator.rebuild(o.Cluster(o.namespace("default"), o.namespace(EGRESS_NS), gateway, service_entry()).store)
    assert list(translator.resources(LISTENER)[LISTENER_NAME].filter_chains) == []


def test_ztunnel_sends_traffic_for_the_entry_address_to_the_waypoint() -> None:
    view = IndexedView(o.Cluster(*objects()).store)
    (result,) = service_entry_services(view, view.get("networking.istio.io/serviceentries", "default", "external"))
    assert result.service.waypoint.address.address == b.raw(GATEWAY_IP)
    store = StateStore()
    waypoint_svc = f"{EGRESS_NS}/egress-gateway.{EGRESS_NS}.svc.cluster.local"
    messages = [
        b.workload("sleep-1", ["198.18.1.5"], sa="sleep"),
        b.workload(
            "egress-gateway-0", ["198.18.4.4"], EGRESS_NS, sa="waypoint", services={waypoint_svc: {15008: 15008}}
        ),
        b.service("egress-gateway", [GATEWAY_IP], {15008: 15008}, EGRESS_NS),
        result.service,
    ]
    assert store.apply(ADDRESS_TYPE_URL, b.resources(*messages)) == []
    decision = decide(store, store.workload(b.pod_uid("default", "sleep-1")), SE_VIP, 80)
    assert decision.route is Route.HBONE and decision.via_waypoint
    assert decision.connect_to[1] == 15008 and str(decision.connect_to[0]) == "198.18.4.4"
    assert decision.authority == f"{SE_VIP}:80"
    assert decision.destination_service.hostname == HOST
