"""Translation of Pods, Services, WorkloadEntries and ServiceEntries into ztunnel Address resources,
and waypoint binding, checked field by field against Istio's ambient behaviour."""

from __future__ import annotations

import ipaddress

import pytest

from mesh.proto_gen.istio.workload import workload_pb2 as wl
from services.xds.generators import view as view_module
from services.xds.generators.resources import ADDRESS_TYPE_URL, address_keys, to_any
from services.xds.generators.services import service_resource
from services.xds.generators.waypoints import service_waypoint, workload_waypoint
from services.xds.generators.workloads import (
    pod_workload,
    service_entry_resources,
    workload_entry_workload,
)
from tests.unit.xds import objects as o

pytestmark = pytest.mark.unit

WP_IP = "198.19.0.100"


def view(*objects):
    return view_module.IndexedView(o.Cluster(*objects).store)


def raw(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def translate_pod(*objects, name="web-1", ns="default"):
    v = view(*objects)
    result = pod_workload(v, v.get("pods", ns, name))
    return None if result is None else result.workload


# --- pods -----------------------------------------------------------------------------------------


def test_pod_fields_follow_istio():
    w = translate_pod(o.pod("web-1", ip="198.18.1.10", service_account="web", node_name="node-7"))
    assert w.uid == "Kubernetes//Pod/default/web-1"
    assert (w.name, w.namespace, w.node, w.service_account) == ("web-1", "default", "node-7", "web")
    assert list(w.addresses) == [raw("198.18.1.10")]
    assert w.trust_domain == ""  # empty means cluster.local
    assert w.cluster_id == "Kubernetes"
    assert w.workload_type == wl.POD
    assert (w.workload_name, w.canonical_name, w.canonical_revision) == ("web-1", "web-1", "latest")
    assert w.status == wl.HEALTHY
    assert w.network == ""


def test_default_service_account_is_set_explicitly():
    assert translate_pod(o.pod("web-1")).service_account == "default"


@pytest.mark.parametrize(
    ("annotations", "protocol"),
    [
        ({}, wl.NONE),
        ({"ambient.istio.io/redirection": "enabled"}, wl.HBONE),
        ({"ambient.istio.io/redirection": "disabled"}, wl.NONE),
    ],
)
def test_tunnel_protocol_follows_the_redirection_annotation(annotations, protocol):
    assert translate_pod(o.pod("web-1", annotations=annotations)).tunnel_protocol == protocol


def test_pod_without_ip_or_terminated_has_no_workload():
    assert translate_pod(o.pod("web-1", ip=None, phase="Pending")) is None
    assert translate_pod(o.pod("web-1", phase="Succeeded")) is None
    assert translate_pod(o.pod("web-1", phase="Failed")) is None


def test_dual_stack_pod_lists_every_ip():
    p = o.pod("web-1", podIPs=[{"ip": "198.18.1.10"}, {"ip": "fd00::a"}])
    assert list(translate_pod(p).addresses) == [raw("198.18.1.10"), raw("fd00::a")]


@pytest.mark.parametrize(
    ("phase", "conditions", "status"),
    [
        ("Running", None, wl.HEALTHY),
        ("Running", [{"type": "Ready", "status": "True"}], wl.HEALTHY),
        ("Running", [{"type": "Ready", "status": "False"}], wl.UNHEALTHY),
        ("Pending", None, wl.UNHEALTHY),
    ],
)
def test_pod_health(phase, conditions, status):
    extra = {"conditions": conditions} if conditions else {}
    assert translate_pod(o.pod("web-1", phase=phase, **extra)).status == status


def test_canonical_names_prefer_istio_labels():
    labels = {"app": "web", "version": "v1", "service.istio.io/canonical-name": "frontend"}
    w = translate_pod(o.pod("web-1", labels=labels))
    assert (w.canonical_name, w.canonical_revision) == ("frontend", "v1")
    w = translate_pod(o.pod("web-1", labels={"app.kubernetes.io/name": "shop", "app": "web"}))
    assert (w.canonical_name, w.canonical_revision) == ("shop", "latest")


def test_workload_name_of_a_deployment_pod():
    p = o.pod("web-5d9c-x2", labels={"pod-template-hash": "5d9c"})
    p["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c", "uid": "u", "controller": True}
    ]
    w = translate_pod(p, name="web-5d9c-x2")
    assert (w.workload_name, w.canonical_name) == ("web", "web")


def test_locality_comes_from_the_node():
    n = o.node("node-1", {"topology.kubernetes.io/region": "eu", "topology.kubernetes.io/zone": "eu-1"})
    w = translate_pod(n, o.pod("web-1"))
    assert (w.locality.region, w.locality.zone, w.locality.subzone) == ("eu", "eu-1", "")
    assert not translate_pod(o.pod("web-1")).HasField("locality")


def test_services_map_resolves_named_target_ports():
    p = o.pod("web-1", labels={"app": "web"}, ports=[{"name": "http-api", "containerPort": 9090}])
    svc = o.service(
        "web",
        selector={"app": "web"},
        ports=[
            {"name": "http", "port": 80, "targetPort": "http-api"},
            {"name": "grpc", "port": 81, "targetPort": 7070},
            {"name": "metrics", "port": 82, "targetPort": "not-declared"},  # left out for this pod
        ],
    )
    other = o.service("other", selector={"app": "other"}, cluster_ip="198.19.0.11")
    no_selector = o.service("manual", cluster_ip="198.19.0.12")
    elsewhere = o.service("web", ns="prod", selector={"app": "web"}, cluster_ip="198.19.0.13")
    w = translate_pod(p, svc, other, no_selector, elsewhere)
    assert list(w.services) == ["default/web.default.svc.cluster.local"]
    ports = [(p.service_port, p.target_port) for p in w.services["default/web.default.svc.cluster.local"].ports]
    assert ports == [(80, 9090), (81, 7070)]


def test_selector_policies_are_listed():
    p = o.pod("web-1", ns="shop", labels={"app": "web"})
    policies = [
        o.authorization_policy("by-label", ns="shop", selector={"matchLabels": {"app": "web"}}),
        o.authorization_policy("other-label", ns="shop", selector={"matchLabels": {"app": "db"}}),
        o.authorization_policy("namespace-wide", ns="shop"),  # NAMESPACE scope: not listed
        o.authorization_policy("custom", ns="shop", selector={}, action="CUSTOM", provider={"name": "x"}),
        o.authorization_policy("mesh-by-label", ns="istio-system", selector={"matchLabels": {"app": "web"}}),
        o.authorization_policy("elsewhere", ns="prod", selector={"matchLabels": {"app": "web"}}),
    ]
    w = translate_pod(p, *policies, ns="shop")
    assert list(w.authorization_policies) == ["istio-system/mesh-by-label", "shop/by-label"]


# --- services -------------------------------------------------------------------------------------


def translate_service(*objects, name="web", ns="default"):
    v = view(*objects)
    return service_resource(v, v.get("services", ns, name))


def test_service_fields():
    ports = [
        {"name": "http-web", "port": 80, "targetPort": 8080},
        {"name": "api", "port": 81, "targetPort": "api", "appProtocol": "grpc"},
        {"name": "tls", "port": 443, "targetPort": 8443},
        {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
    ]
    result = translate_service(o.service("web", selector={"app": "web"}, ports=ports))
    s = result.service
    assert (s.name, s.namespace, s.hostname) == ("web", "default", "web.default.svc.cluster.local")
    assert [(a.network, a.address) for a in s.addresses] == [("", raw("198.19.0.10"))]
    assert [(p.service_port, p.target_port, p.app_protocol) for p in s.ports] == [
        (80, 8080, wl.HTTP11),
        (81, 0, wl.GRPC),  # a named targetPort is resolved per workload
        (443, 8443, wl.TLS),
        (53, 53, wl.UNKNOWN),
    ]
    assert s.canonical and not s.HasField("waypoint") and not s.ingress_use_waypoint
    assert result.binding.condition() is None


def test_headless_service_has_no_addresses():
    s = translate_service(o.service("web", selector={"app": "web"}, cluster_ip="None")).service
    assert list(s.addresses) == []
    assert s.hostname == "web.default.svc.cluster.local"


def test_external_name_service_is_not_translated():
    # Istio builds nothing for ExternalName: DNS answers it, so no Service and no addresses.
    svc = o.service("ext", cluster_ip=None, ports=[], type="ExternalName", externalName="example.com")
    assert translate_service(svc, name="ext") is None


def test_dual_stack_and_traffic_policy():
    svc = o.service(
        "web",
        selector={"app": "web"},
        clusterIPs=["198.19.0.10", "fd00::10"],
        ipFamilies=["IPv4", "IPv6"],
        internalTrafficPolicy="Local",
    )
    s = translate_service(svc).service
    assert [a.address for a in s.addresses] == [raw("198.19.0.10"), raw("fd00::10")]
    assert s.ip_families == wl.DUAL
    assert list(s.load_balancing.routing_preference) == [wl.LoadBalancing.NODE]
    assert s.load_balancing.mode == wl.LoadBalancing.STRICT


# --- waypoint binding -----------------------------------------------------------------------------


def bound_ip(msg) -> str | None:
    return str(ipaddress.ip_address(msg.waypoint.address.address)) if msg.HasField("waypoint") else None


def test_object_label_beats_namespace_label():
    objs = [
        o.namespace("default", {"istio.io/use-waypoint": "ns-wp"}),
        o.gateway("ns-wp", address="198.19.0.101"),
        o.gateway("svc-wp", address="198.19.0.102"),
    ]
    own = translate_service(*objs, o.service("web", labels={"istio.io/use-waypoint": "svc-wp"}))
    inherited = translate_service(*objs, o.service("web"))
    assert bound_ip(own.service) == "198.19.0.102"
    assert bound_ip(inherited.service) == "198.19.0.101"
    assert own.service.waypoint.hbone_mtls_port == 15008
    assert inherited.binding.condition() == {
        "type": "istio.io/WaypointBound",
        "status": "True",
        "reason": "WaypointAccepted",
        "message": "bound to default/ns-wp",
    }


def test_none_opts_out_of_the_namespace_waypoint():
    objs = [o.namespace("default", {"istio.io/use-waypoint": "wp"}), o.gateway("wp")]
    result = translate_service(*objs, o.service("web", labels={"istio.io/use-waypoint": "none"}))
    assert bound_ip(result.service) is None
    assert result.binding.condition() is None
    none_ns = translate_service(o.namespace("default", {"istio.io/use-waypoint": "none"}), o.service("web"))
    assert bound_ip(none_ns.service) is None


@pytest.mark.parametrize(("allowed_from", "bound"), [(None, False), ("Same", False), ("All", True)])
def test_use_waypoint_namespace(allowed_from, bound):
    labels = {"istio.io/use-waypoint": "shared", "istio.io/use-waypoint-namespace": "infra"}
    gw = o.gateway("shared", ns="infra", allowed_from=allowed_from)
    result = translate_service(gw, o.service("web", labels=labels))
    assert (bound_ip(result.service) == WP_IP) is bound
    assert result.binding.waypoint == ("infra", "shared")
    assert result.binding.reason == ("WaypointAccepted" if bound else "AttachmentDenied")


@pytest.mark.parametrize(
    ("waypoint_for", "service_bound", "pod_bound"),
    [
        (None, True, False),
        ("service", True, False),
        ("workload", False, True),
        ("all", True, True),
        ("none", False, False),
    ],
)
def test_waypoint_for(waypoint_for, service_bound, pod_bound):
    labels = {"istio.io/waypoint-for": waypoint_for} if waypoint_for else {}
    objs = [
        o.namespace("default", {"istio.io/use-waypoint": "wp"}),
        o.gateway("wp", labels=labels),
        o.service("web", selector={"app": "web"}),
        o.pod("web-1", labels={"app": "web"}),
    ]
    assert (bound_ip(translate_service(*objs).service) == WP_IP) is service_bound
    assert (bound_ip(translate_pod(*objs)) == WP_IP) is pod_bound


def test_waypoint_for_mismatch_is_an_error_only_when_asked_directly():
    gw = o.gateway("wp", labels={"istio.io/waypoint-for": "service"})
    v = view(o.namespace("default", {"istio.io/use-waypoint": "wp"}), gw)
    inherited = workload_waypoint(v, o.pod("a"))
    direct = workload_waypoint(v, o.pod("b", labels={"istio.io/use-waypoint": "wp"}))
    assert not inherited.bound and inherited.condition() is None
    assert direct.condition()["reason"] == "UnsupportedTrafficType"
    assert direct.condition()["message"] == (
        'attempting to bind to traffic type "workload" which the waypoint "default/wp" does not support'
    )


@pytest.mark.parametrize(
    ("gateways", "reason", "message"),
    [
        ([], "WaypointIsNotReady", 'waypoint "default/wp" is not ready'),
        ([o.gateway("wp", address=None)], "WaypointIsNotReady", 'waypoint "default/wp" is not ready'),
        (
            [o.gateway("wp", class_name="istio")],
            "NotAWaypoint",
            'gateway "default/wp" has gatewayClassName "istio", not "istio-waypoint"',
        ),
    ],
)
def test_pending_binding(gateways, reason, message):
    v = view(*gateways)
    binding = service_waypoint(v, o.service("web", labels={"istio.io/use-waypoint": "wp"}))
    assert binding.address is None and binding.waypoint == ("default", "wp")
    assert binding.condition() == {
        "type": "istio.io/WaypointBound",
        "status": "False",
        "reason": reason,
        "message": message,
    }


def test_a_waypoint_pod_never_goes_through_a_waypoint():
    objs = [
        o.namespace("default", {"istio.io/use-waypoint": "wp"}),
        o.gateway("wp", labels={"istio.io/waypoint-for": "all"}),
    ]
    p = o.pod("wp-1", labels={"gateway.networking.k8s.io/gateway-name": "wp"})
    assert bound_ip(translate_pod(*objs, p, name="wp-1")) is None


def test_ingress_use_waypoint_only_when_bound():
    labels = {"istio.io/use-waypoint": "wp", "istio.io/ingress-use-waypoint": "true"}
    assert translate_service(o.gateway("wp"), o.service("web", labels=labels)).service.ingress_use_waypoint
    assert not translate_service(o.service("web", labels=labels)).service.ingress_use_waypoint


# --- workload entries and service entries ---------------------------------------------------------


def test_workload_entry():
    we = o.workload_entry(
        "vm-1",
        labels={"istio.io/use-waypoint": "wp"},
        spec_labels={"app": "web"},
        address="203.0.113.7",
        serviceAccount="vm",
        network="net-2",
        locality="eu/eu-1",
        weight=3,
        ports={"api": 9000},
    )
    svc = o.service("web", selector={"app": "web"}, ports=[{"name": "http", "port": 80, "targetPort": "api"}])
    gw = o.gateway("wp", labels={"istio.io/waypoint-for": "workload"})
    v = view(we, svc, gw)
    result = workload_entry_workload(v, v.get("networking.istio.io/workloadentries", "default", "vm-1"))
    w = result.workload
    assert w.uid == "Kubernetes/networking.istio.io/WorkloadEntry/default/vm-1"
    assert (w.name, w.namespace, w.service_account, w.network) == ("vm-1", "default", "vm", "net-2")
    assert list(w.addresses) == [raw("203.0.113.7")]
    assert (w.locality.region, w.locality.zone) == ("eu", "eu-1")
    assert w.capacity.value == 3
    assert bound_ip(w) == WP_IP
    ports = w.services["default/web.default.svc.cluster.local"].ports
    assert [(p.service_port, p.target_port) for p in ports] == [(80, 9000)]


def test_workload_entry_with_a_dns_address():
    v = view(o.workload_entry("vm-1", address="vm1.example.com"))
    w = workload_entry_workload(v, v.get("networking.istio.io/workloadentries", "default", "vm-1")).workload
    assert list(w.addresses) == [] and w.hostname == "vm1.example.com"


def test_service_entry_with_addresses_and_endpoints():
    se = o.service_entry(
        "db",
        hosts=["db.example.com", "db2.example.com"],
        addresses=["203.0.113.0/24", "203.0.113.9"],
        ports=[
            {"number": 5432, "name": "tcp-pg", "protocol": "TCP"},
            {"number": 80, "name": "http", "targetPort": 8080, "protocol": "HTTP"},
        ],
        resolution="STATIC",
        endpoints=[
            {"address": "203.0.113.20", "ports": {"tcp-pg": 6432}},
            {"address": "203.0.113.21", "labels": {"v": "2"}},
        ],
    )
    v = view(se)
    services, workloads = service_entry_resources(v, v.get("networking.istio.io/serviceentries", "default", "db"))
    assert [s.service.hostname for s in services] == ["db.example.com", "db2.example.com"]
    s = services[0].service
    assert (s.name, s.namespace) == ("db", "default")
    assert [(a.address, a.HasField("length") and a.length) for a in s.addresses] == [
        (raw("203.0.113.0"), 24),
        (raw("203.0.113.9"), False),
    ]
    assert [(p.service_port, p.target_port, p.app_protocol) for p in s.ports] == [
        (5432, 5432, wl.TCP),
        (80, 8080, wl.HTTP11),
    ]
    assert not s.HasField("load_balancing")
    assert [w.workload.uid for w in workloads] == [
        "Kubernetes/networking.istio.io/ServiceEntry/default/db/203.0.113.20",
        "Kubernetes/networking.istio.io/ServiceEntry/default/db/203.0.113.21",
    ]
    first = workloads[0].workload
    assert list(first.addresses) == [raw("203.0.113.20")] and first.name == "db"
    assert set(first.services) == {"default/db.example.com", "default/db2.example.com"}
    assert [(p.service_port, p.target_port) for p in first.services["default/db.example.com"].ports] == [
        (5432, 6432),  # remapped by the endpoint's port of the same name
        (80, 8080),
    ]


def test_service_entry_resolution_none_passes_through():
    v = view(
        o.service_entry(
            "ext",
            hosts=["api.example.com"],
            addresses=["203.0.113.5"],
            ports=[{"number": 443, "name": "tls", "protocol": "TLS"}],
        )
    )
    services, workloads = service_entry_resources(v, v.get("networking.istio.io/serviceentries", "default", "ext"))
    lb = services[0].service.load_balancing
    assert (lb.mode, lb.health_policy) == (wl.LoadBalancing.PASSTHROUGH, wl.LoadBalancing.ALLOW_ALL)
    assert workloads == []


def test_service_entry_selecting_pods():
    se = o.service_entry(
        "web-ext",
        hosts=["web.example.com"],
        ports=[{"number": 80, "name": "http", "targetPort": 8080}],
        workloadSelector={"labels": {"app": "web"}},
        resolution="STATIC",
    )
    v = view(se, o.pod("web-1", labels={"app": "web"}))
    assert service_entry_resources(v, v.get("networking.istio.io/serviceentries", "default", "web-ext"))[1] == []
    w = pod_workload(v, v.get("pods", "default", "web-1")).workload
    assert [(p.service_port, p.target_port) for p in w.services["default/web.example.com"].ports] == [(80, 8080)]


# --- names and wire form --------------------------------------------------------------------------


def test_address_keys_and_any():
    w = translate_pod(o.pod("web-1", ip="198.18.1.10"))
    s = translate_service(o.service("web", selector={"app": "web"})).service
    assert address_keys(w) == ["/198.18.1.10"]
    assert address_keys(s) == ["/198.19.0.10", "default/web.default.svc.cluster.local"]
    packed = to_any(s)
    assert packed.type_url == ADDRESS_TYPE_URL
    address = wl.Address()
    assert packed.Unpack(address) and address.service == s
    address = wl.Address()
    to_any(w).Unpack(address)
    assert address.WhichOneof("type") == "workload" and address.workload == w
