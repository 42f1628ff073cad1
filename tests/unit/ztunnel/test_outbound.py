"""The outbound decision (reference §6, istio/ztunnel: src/proxy/outbound.rs build_request)."""

from __future__ import annotations

import ipaddress

import pytest

from dataplane.ztunnel.state import ADDRESS_TYPE_URL, StateStore
from dataplane.ztunnel.state.outbound import Route, decide
from mesh.identity import Identity
from mesh.proto_gen.istio.workload import workload_pb2 as wl
from tests.unit.ztunnel import builders as b

pytestmark = pytest.mark.unit

WEB = b.svc_key("web")
WAYPOINT_SVC = b.svc_key("waypoint")


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def ident(sa: str, ns: str = "default") -> Identity:
    return Identity("cluster.local", ns, sa)


def mesh(*extra) -> StateStore:
    """sleep (client), web behind a VIP (two ports, one endpoint), a legacy pod outside the mesh,
    and a waypoint with its own service."""
    store = StateStore()
    messages = [
        b.workload("sleep-1", ["198.18.1.5", "fd00::5"], sa="sleep"),
        b.workload("web-1", ["198.18.2.10", "fd00::10"], sa="web", services={WEB: {80: 8080, 443: 8443}}),
        b.service(
            "web",
            ["198.19.0.10", "fd00:19::10"],
            {80: 8080, 443: 8443},
            sans=["spiffe://cluster.local/ns/default/sa/web-canary", "dns:web"],
        ),
        b.workload("legacy-1", ["198.18.3.3"], sa="legacy", hbone=False),
        b.workload("waypoint-1", ["198.18.4.4"], sa="waypoint", services={WAYPOINT_SVC: {15008: 15008}}),
        b.service("waypoint", ["198.19.0.4"], {15008: 15008}),
        *extra,
    ]
    assert store.apply(ADDRESS_TYPE_URL, b.resources(*messages)) == []
    return store


def source(store: StateStore, name: str = "sleep-1"):
    return store.workload(b.pod_uid("default", name))


def test_unknown_source_is_denied() -> None:
    decision = decide(mesh(), None, "198.19.0.10", 80)
    assert decision.route is Route.DENY and not decision.allowed
    assert decision.reason == "unknown source workload connecting to 198.19.0.10:80"


@pytest.mark.parametrize(("dst", "port"), [("127.0.0.1", 15001), ("127.0.0.1", 15008), ("198.18.1.5", 15006)])
def test_calls_to_ztunnels_own_ports_are_refused(dst, port) -> None:
    store = mesh()
    assert decide(store, source(store), dst, port).route is Route.DENY


def test_vip_resolves_to_an_endpoint_over_hbone() -> None:
    store = mesh()
    d = decide(store, source(store), "198.19.0.10", 80)
    assert d.route is Route.HBONE and not d.via_waypoint
    assert d.connect_to == (ip("198.18.2.10"), 15008)
    assert d.authority == "198.18.2.10:8080"
    assert d.destination_workload.name == "web-1" and d.destination_service.key == WEB
    # The workload's identity, then the service's SANs that are SPIFFE identities.
    assert d.expected_identities == (ident("web"), ident("web-canary"))


def test_ipv6_vip_picks_the_endpoints_ipv6_address() -> None:
    store = mesh()
    d = decide(store, source(store), "fd00:19::10", 443)
    assert d.connect_to == (ip("fd00::10"), 15008) and d.authority == "[fd00::10]:8443"


def test_pod_ip_goes_directly_to_the_pod() -> None:
    store = mesh()
    d = decide(store, source(store), "198.18.2.10", 8080)
    assert d.route is Route.HBONE and d.destination_service is None
    assert d.connect_to == (ip("198.18.2.10"), 15008) and d.authority == "198.18.2.10:8080"
    assert d.expected_identities == (ident("web"),)


def test_same_node_traffic_is_hbone_too() -> None:
    store = mesh(b.workload("neighbour", ["198.18.1.6"], sa="n", node="node-1"))
    assert decide(store, source(store), "198.18.1.6", 80).route is Route.HBONE


def test_workloads_outside_the_mesh_get_plain_tcp() -> None:
    store = mesh()
    d = decide(store, source(store), "198.18.3.3", 5432)
    assert d.route is Route.TCP and d.connect_to == (ip("198.18.3.3"), 5432) and d.expected_identities == ()


def test_unknown_destinations_pass_through() -> None:
    store = mesh()
    d = decide(store, source(store), "203.0.113.7", 443)
    assert d.route is Route.TCP and d.connect_to == (ip("203.0.113.7"), 443) and d.destination_workload is None


def test_vip_without_healthy_endpoints_is_denied() -> None:
    store = mesh(b.service("empty", ["198.19.0.11"], {80: 80}))
    d = decide(store, source(store), "198.19.0.11", 80)
    assert d.route is Route.DENY and d.reason == f"no healthy endpoint for {b.svc_key('empty')} port 80"


def test_vip_on_a_port_the_service_lacks_is_denied() -> None:
    store = mesh()
    assert decide(store, source(store), "198.19.0.10", 81).route is Route.DENY


def test_service_waypoint_by_vip_keeps_the_vip_as_authority() -> None:
    store = mesh(b.service("api", ["198.19.0.20"], {80: 80}, waypoint=b.gateway_ip("198.19.0.4")))
    d = decide(store, source(store), "198.19.0.20", 80)
    assert d.route is Route.HBONE and d.via_waypoint
    assert d.connect_to == (ip("198.18.4.4"), 15008) and d.authority == "198.19.0.20:80"
    assert d.destination_workload.name == "waypoint-1" and d.destination_service.name == "api"
    assert d.expected_identities == (ident("waypoint"),)


def test_service_waypoint_by_hostname() -> None:
    gateway = b.gateway_host("default", "waypoint.default.svc.cluster.local")
    store = mesh(b.service("api", ["198.19.0.20"], {80: 80}, waypoint=gateway))
    d = decide(store, source(store), "198.19.0.20", 80)
    assert d.via_waypoint and d.connect_to == (ip("198.18.4.4"), 15008)


def test_service_waypoint_by_pod_ip() -> None:
    store = mesh(b.service("api", ["198.19.0.20"], {80: 80}, waypoint=b.gateway_ip("198.18.4.4")))
    d = decide(store, source(store), "198.19.0.20", 80)
    assert d.via_waypoint and d.connect_to == (ip("198.18.4.4"), 15008)


def test_an_unresolvable_waypoint_denies_rather_than_bypassing_it() -> None:
    store = mesh(b.service("api", ["198.19.0.20"], {80: 80}, waypoint=b.gateway_ip("198.19.9.9")))
    d = decide(store, source(store), "198.19.0.20", 80)
    assert d.route is Route.DENY and "waypoint of service" in d.reason


def test_workload_waypoint_for_pod_addressed_traffic() -> None:
    pod = b.workload("db-1", ["198.18.5.5"], sa="db", waypoint=b.gateway_ip("198.19.0.4"))
    store = mesh(pod)
    d = decide(store, source(store), "198.18.5.5", 5432)
    assert d.via_waypoint and d.connect_to == (ip("198.18.4.4"), 15008)
    assert d.authority == "198.18.5.5:5432" and d.expected_identities == (ident("waypoint"),)


def test_workload_waypoint_is_not_used_for_service_addressed_traffic() -> None:
    db = b.svc_key("db")
    pod = b.workload("db-1", ["198.18.5.5"], sa="db", waypoint=b.gateway_ip("198.19.0.4"), services={db: {5432: 5432}})
    store = mesh(pod, b.service("db", ["198.19.0.30"], {5432: 5432}))
    d = decide(store, source(store), "198.19.0.30", 5432)
    assert not d.via_waypoint and d.destination_workload.name == "db-1"


def test_the_waypoint_itself_goes_straight_to_the_workload() -> None:
    pod = b.workload("db-1", ["198.18.5.5"], sa="db", waypoint=b.gateway_ip("198.19.0.4"))
    store = mesh(pod)
    d = decide(store, source(store, "waypoint-1"), "198.18.5.5", 5432)
    assert not d.via_waypoint and d.connect_to == (ip("198.18.5.5"), 15008)


def test_passthrough_services_go_to_the_address_dialled() -> None:
    lb = wl.LoadBalancing(mode=wl.LoadBalancing.PASSTHROUGH, health_policy=wl.LoadBalancing.ALLOW_ALL)
    store = mesh(b.service("external", ["203.0.113.0"], {443: 443}, lb=lb))
    d = decide(store, source(store), "203.0.113.0", 443)
    assert d.route is Route.TCP and d.connect_to == (ip("203.0.113.0"), 443)


def test_endpoints_on_another_network_are_refused() -> None:
    # Double HBONE through an east-west gateway is not implemented: refuse with the reason.
    remote = b.workload("far-1", ["10.9.0.1"], network="net-2", services={b.svc_key("far"): {80: 80}})
    store = mesh(remote, b.service("far", ["198.19.0.40"], {80: 80}))
    d = decide(store, source(store), "198.19.0.40", 80)
    assert d.route is Route.DENY and "cross-network is unsupported" in d.reason
    # Pod IPs are looked up on the source's network: the remote pod IP is not ours, so passthrough.
    assert decide(store, source(store), "10.9.0.1", 80).route is Route.TCP
