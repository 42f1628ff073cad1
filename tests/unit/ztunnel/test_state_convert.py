"""Conversion at the edge: istio.workload / istio.security messages into ztunnel's domain types."""

from __future__ import annotations

import ipaddress

import pytest
from google.protobuf import wrappers_pb2

from dataplane.ztunnel.state import (
    Action,
    GatewayAddress,
    HealthPolicy,
    HealthStatus,
    LoadBalancingMode,
    NamespacedHostname,
    NetworkAddress,
    Policy,
    ResourceError,
    RoutingScope,
    Scope,
    Service,
    ServiceAccountMatch,
    StringMatch,
    StringMatchKind,
    TunnelProtocol,
    Workload,
)
from mesh.identity import Identity
from mesh.proto_gen.istio.security import authorization_pb2 as authz
from mesh.proto_gen.istio.workload import workload_pb2 as wl
from tests.unit.ztunnel import builders as b

pytestmark = pytest.mark.unit


def test_workload_fields_and_defaults() -> None:
    message = b.workload(
        "web-1",
        ["198.18.1.10", "fd00::a"],
        sa="",
        services={b.svc_key("web"): {80: 8080}},
        policies=["default/allow-web"],
        waypoint=b.gateway_ip("198.19.0.9"),
        locality=("r1", "z1", ""),
    )
    message.trust_domain = ""
    w = Workload.from_proto(message)
    assert w.uid == "Kubernetes//Pod/default/web-1"
    assert w.addresses == (ipaddress.ip_address("198.18.1.10"), ipaddress.ip_address("fd00::a"))
    # Empty trust domain and service account take Istio's defaults (reference §2).
    assert (w.trust_domain, w.service_account) == ("cluster.local", "default")
    assert w.identity == Identity("cluster.local", "default", "default")
    assert w.tunnel_protocol is TunnelProtocol.HBONE
    assert w.status is HealthStatus.HEALTHY and w.healthy
    assert dict(w.services[b.svc_key("web")]) == {80: 8080}
    assert w.authorization_policies == ("default/allow-web",)
    assert w.waypoint == GatewayAddress(NetworkAddress("", ipaddress.ip_address("198.19.0.9")), 15008)
    assert w.capacity == 1, "an unset capacity is 1"
    assert (w.locality.region, w.locality.zone) == ("r1", "z1")
    assert w.workload_type == "DEPLOYMENT" and w.network_mode == "STANDARD"


def test_workload_identity_uses_trust_domain_and_account() -> None:
    message = b.workload("api", ["198.18.1.11"], namespace="shop", sa="api")
    message.trust_domain = "example.org"
    message.capacity.CopyFrom(wrappers_pb2.UInt32Value(value=0))
    w = Workload.from_proto(message)
    assert str(w.identity) == "spiffe://example.org/ns/shop/sa/api"
    assert w.capacity == 0, "an explicit 0 is kept: the workload takes no new connections"


def test_workloads_are_frozen_and_comparable() -> None:
    one = Workload.from_proto(b.workload("a", ["198.18.1.1"], services={b.svc_key("s"): {1: 2}}))
    two = Workload.from_proto(b.workload("a", ["198.18.1.1"], services={b.svc_key("s"): {1: 2}}))
    assert one == two
    with pytest.raises(AttributeError):
        one.name = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        one.services["x"] = {}  # type: ignore[index]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda m: m.ClearField("uid"), "uid: a workload needs a uid"),
        (lambda m: m.addresses.append(b"\x01\x02\x03"), "addresses[1]: an IP address is 4 or 16 bytes, not 3"),
        (lambda m: setattr(m, "tunnel_protocol", 7), "tunnel_protocol: unknown value 7"),
        (lambda m: setattr(m, "namespace", "Bad_NS"), "identity: namespace 'Bad_NS' is not an RFC 1123 label"),
        (lambda m: m.services["no-slash"].ports.add(), "services['no-slash']: a service key is namespace/hostname"),
        (lambda m: m.services["a/b"].ports.add(service_port=70000), "services['a/b'].ports[0].service_port: 70000"),
        (lambda m: m.waypoint.hostname.SetInParent(), "waypoint.hostname: the hostname is empty"),
    ],
)
def test_workload_problems_name_the_field(mutate, problem) -> None:
    message = b.workload("web-1", ["198.18.1.10"])
    mutate(message)
    with pytest.raises(ResourceError) as e:
        Workload.from_proto(message)
    assert str(e.value).startswith(problem)


def test_service_fields() -> None:
    message = b.service(
        "web",
        ["198.19.0.10", "fd00::10"],
        {80: 8080, 9090: 0},
        waypoint=b.gateway_host("default", "waypoint.default.svc.cluster.local"),
        sans=["spiffe://cluster.local/ns/default/sa/web"],
        lb=wl.LoadBalancing(
            routing_preference=[wl.LoadBalancing.NODE, wl.LoadBalancing.UNSPECIFIED_SCOPE],
            mode=wl.LoadBalancing.STRICT,
            health_policy=wl.LoadBalancing.ALLOW_ALL,
        ),
    )
    message.ports[0].app_protocol = wl.HTTP11
    s = Service.from_proto(message)
    assert s.key == "default/web.default.svc.cluster.local"
    assert [str(v) for v in s.vips] == ["/198.19.0.10", "/fd00::10"]
    assert dict(s.ports) == {80: 8080, 9090: 0}
    assert s.app_protocols[80] == "HTTP11"
    assert s.waypoint == GatewayAddress(NamespacedHostname("default", "waypoint.default.svc.cluster.local"))
    assert s.load_balancing.routing_preference == (RoutingScope.NODE,)
    assert s.load_balancing.mode is LoadBalancingMode.STRICT
    assert s.load_balancing.health_policy is HealthPolicy.ALLOW_ALL and s.allows_unhealthy
    assert s.subject_alt_names == ("spiffe://cluster.local/ns/default/sa/web",)


def test_service_without_load_balancing_takes_only_healthy_endpoints() -> None:
    s = Service.from_proto(b.service("web", ["198.19.0.10"], {80: 80}))
    assert s.load_balancing is None and not s.allows_unhealthy


def test_service_problems() -> None:
    with pytest.raises(ResourceError, match="hostname: a service needs a hostname"):
        Service.from_proto(wl.Service(name="x", namespace="default"))
    bad = b.service("web", ["198.19.0.10"], {80: 80})
    bad.addresses.add(address=b"\x00")
    with pytest.raises(ResourceError, match=r"addresses\[1\].address"):
        Service.from_proto(bad)


def _strict() -> authz.Authorization:
    """The converted STRICT PeerAuthentication (istio/istio: policies.go)."""
    return authz.Authorization(
        name="istio_converted_static_strict",
        namespace="istio-system",
        scope=authz.WORKLOAD_SELECTOR,
        action=authz.DENY,
        rules=[
            authz.Group(rules=[authz.Rules(matches=[authz.Match(not_principals=[authz.StringMatch(presence={})])])])
        ],
    )


def test_policy_conversion() -> None:
    match = authz.Match(
        namespaces=[authz.StringMatch(exact="foo")],
        principals=[authz.StringMatch(prefix="cluster.local/ns/foo/")],
        not_principals=[authz.StringMatch(suffix="/sa/admin")],
        source_ips=[authz.Address(address=b.raw("198.18.4.7"), length=22)],
        destination_ports=[80, 443],
        service_accounts=[authz.ServiceAccountMatch(namespace="foo", serviceAccount="sleep")],
    )
    message = authz.Authorization(
        name="p",
        namespace="foo",
        scope=authz.NAMESPACE,
        action=authz.ALLOW,
        dry_run=True,
        rules=[authz.Group(rules=[authz.Rules(matches=[match, authz.Match()])]), authz.Group()],
    )
    p = Policy.from_proto(message)
    assert (p.key, p.scope, p.action, p.dry_run) == ("foo/p", Scope.NAMESPACE, Action.ALLOW, True)
    (clause,) = p.rules[0]
    m, empty = clause
    assert m.namespaces == (StringMatch(StringMatchKind.EXACT, "foo"),)
    assert m.principals == (StringMatch(StringMatchKind.PREFIX, "cluster.local/ns/foo/"),)
    assert m.not_principals == (StringMatch(StringMatchKind.SUFFIX, "/sa/admin"),)
    # The address keeps host bits on the wire; the network contains the block.
    assert m.source_ips == (ipaddress.ip_network("198.18.4.0/22"),)
    assert m.destination_ports == (80, 443)
    assert m.service_accounts == (ServiceAccountMatch("foo", "sleep"),)
    assert empty.is_empty and not m.is_empty
    assert p.rules[1] == (), "a rule without clauses is kept: it matches everything"


def test_the_strict_policy_converts() -> None:
    p = Policy.from_proto(_strict())
    assert p.key == "istio-system/istio_converted_static_strict"
    assert p.rules == (((p.rules[0][0][0],),),)
    assert p.rules[0][0][0].not_principals == (StringMatch(StringMatchKind.PRESENCE),)
    assert str(p.rules[0][0][0].not_principals[0]) == "*"


@pytest.mark.parametrize(
    ("match", "problem"),
    [
        (authz.Match(principals=[authz.StringMatch()]), "matches[0].principals[0]: a StringMatch needs"),
        (authz.Match(source_ips=[authz.Address(address=b"\x01", length=8)]), "source_ips[0].address"),
        (authz.Match(destination_ips=[authz.Address(address=b.raw("10.0.0.1"), length=33)]), "longer than 32"),
        (authz.Match(destination_ports=[65536]), "destination_ports: 65536 is not a port"),
    ],
)
def test_policy_problems_refuse_rather_than_widen(match, problem) -> None:
    message = authz.Authorization(name="p", namespace="foo", rules=[authz.Group(rules=[authz.Rules(matches=[match])])])
    with pytest.raises(ResourceError) as e:
        Policy.from_proto(message)
    assert str(e.value).startswith("rules[0].clauses[0].matches[0].")
    assert problem in str(e.value)


def test_address_length_zero_is_every_address() -> None:
    match = authz.Match(source_ips=[authz.Address(address=b.raw("10.1.2.3"), length=0)])
    message = authz.Authorization(name="p", namespace="foo", rules=[authz.Group(rules=[authz.Rules(matches=[match])])])
    assert Policy.from_proto(message).rules[0][0][0].source_ips == (ipaddress.ip_network("0.0.0.0/0"),)
