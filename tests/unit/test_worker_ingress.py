"""The ingress job's pure decisions: listener status, attached routes, reference checks, route
parents, and the stream trigger rules of mesh-xds."""

from __future__ import annotations

from services.worker import gateway_refs as refs
from services.worker import ingress as ig
from services.worker.gateway_refs import ObjectKey
from services.xds.gateway_jobs import affected_ingress_gateways
from services.xds.model import GATEWAYS, HTTP_ROUTES, SECRETS, Change, ConfigStore, Key


def gateway(*listeners: dict, ns: str = "default", name: str = "shop") -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns, "uid": "u-1", "resourceVersion": "1"},
        "spec": {"gatewayClassName": "istio", "listeners": list(listeners)},
    }


HTTP = {"name": "http", "port": 80, "protocol": "HTTP"}
HTTPS = {
    "name": "https",
    "port": 443,
    "protocol": "HTTPS",
    "hostname": "shop.example.com",
    "tls": {"certificateRefs": [{"name": "cert"}]},
}


def route(name: str = "r", ns: str = "default", hosts: list[str] | None = None, **ref: object) -> dict:
    spec: dict = {"parentRefs": [{"name": "shop", **ref}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}
    if hosts:
        spec["hostnames"] = hosts
    return {"kind": "HTTPRoute", "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"}, "spec": spec}


def conds(entry: dict) -> dict[str, dict]:
    return {c["type"]: c for c in entry["conditions"]}


def test_missing_invalid_and_good_certificates() -> None:
    gw = gateway(HTTP, HTTPS)
    missing = conds(ig.listener_status(gw, HTTPS, ig.World(), 0, True))
    assert missing["ResolvedRefs"]["status"] == "False"
    assert missing["ResolvedRefs"]["reason"] == "InvalidCertificateRef"
    assert "default/cert does not exist" in missing["ResolvedRefs"]["message"]
    assert missing["Programmed"]["status"] == "False" and missing["Accepted"]["status"] == "True"

    bad = ig.World(secrets={ObjectKey("default", "cert"): "it is of type 'Opaque', not 'kubernetes.io/tls'"})
    invalid = conds(ig.listener_status(gw, HTTPS, bad, 0, True))["ResolvedRefs"]
    assert invalid["reason"] == "InvalidCertificateRef" and "Opaque" in invalid["message"]

    good = ig.World(secrets={ObjectKey("default", "cert"): None})
    entry = ig.listener_status(gw, HTTPS, good, 3, True)
    assert conds(entry)["ResolvedRefs"]["status"] == "True" and conds(entry)["Programmed"]["status"] == "True"
    assert entry["attachedRoutes"] == 3
    assert [k["kind"] for k in entry["supportedKinds"]] == ["HTTPRoute", "GRPCRoute"]


def test_cross_namespace_certificate_needs_a_grant() -> None:
    listener = {**HTTPS, "tls": {"certificateRefs": [{"name": "cert", "namespace": "certs"}]}}
    gw = gateway(listener)
    world = ig.World(secrets={ObjectKey("certs", "cert"): None})
    refused = conds(ig.listener_status(gw, listener, world, 0, True))["ResolvedRefs"]
    assert refused["reason"] == "RefNotPermitted" and "certs/cert" in refused["message"]
    grant = {
        "metadata": {"name": "g", "namespace": "certs"},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default"}],
            "to": [{"group": "", "kind": "Secret", "name": "cert"}],
        },
    }
    granted = ig.World(secrets=world.secrets, grants=[grant])
    assert conds(ig.listener_status(gw, listener, granted, 0, True))["ResolvedRefs"]["status"] == "True"
    other_name = {**grant, "spec": {**grant["spec"], "to": [{"group": "", "kind": "Secret", "name": "other"}]}}
    assert conds(ig.listener_status(gw, listener, ig.World(secrets=world.secrets, grants=[other_name]), 0, True))[
        "ResolvedRefs"
    ]["reason"] == ("RefNotPermitted")


def test_unsupported_protocol_and_route_kinds() -> None:
    tcp = {"name": "tcp", "port": 9000, "protocol": "TCP"}
    entry = ig.listener_status(gateway(tcp), tcp, ig.World(), 0, True)
    assert conds(entry)["Accepted"]["reason"] == "UnsupportedProtocol" and entry["supportedKinds"] == []
    kinds = {**HTTP, "allowedRoutes": {"kinds": [{"kind": "TCPRoute"}, {"kind": "HTTPRoute"}]}}
    entry = ig.listener_status(gateway(kinds), kinds, ig.World(), 0, True)
    assert conds(entry)["ResolvedRefs"]["reason"] == "InvalidRouteKinds"
    assert entry["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]


def test_attached_routes_follow_section_port_namespace_and_hostname() -> None:
    gw = gateway(HTTP, HTTPS)
    routes = [
        ("HTTPRoute", route("both")),
        ("HTTPRoute", route("only-https", sectionName="https")),
        ("HTTPRoute", route("port-80", port=80)),
        ("HTTPRoute", route("other-host", hosts=["else.example.com"])),  # attaches to http only (no hostname)
        ("HTTPRoute", route("elsewhere", ns="team", namespace="default")),  # allowedRoutes defaults to Same
        ("GRPCRoute", route("grpc", sectionName="http")),
        ("HTTPRoute", route("not-ours") | {"spec": {"parentRefs": [{"name": "other"}]}}),
    ]
    assert ig.attached_routes(gw, ig.World(routes=routes)) == {"http": 4, "https": 2}

    from_all = {**HTTP, "allowedRoutes": {"namespaces": {"from": "All"}}}
    assert ig.attached_routes(
        gateway(from_all), ig.World(routes=[("HTTPRoute", route(ns="team", namespace="default"))])
    ) == {"http": 1}
    selected = {**HTTP, "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"t": "1"}}}}}
    world = ig.World(
        routes=[("HTTPRoute", route(ns="team", namespace="default"))], namespace_labels={"team": {"t": "1"}}
    )
    assert ig.attached_routes(gateway(selected), world) == {"http": 1}
    assert ig.attached_routes(gateway(selected), ig.World(routes=world.routes)) == {"http": 0}


def test_hostname_intersection() -> None:
    wildcard = {"hostname": "*.example.com"}
    assert refs.hostnames_intersect(wildcard, {"spec": {"hostnames": ["shop.example.com"]}})
    assert not refs.hostnames_intersect(wildcard, {"spec": {"hostnames": ["example.com"]}})
    assert refs.hostnames_intersect({"hostname": "a.example.com"}, {"spec": {"hostnames": ["*.example.com"]}})
    assert refs.hostnames_intersect({}, {"spec": {"hostnames": ["anything.io"]}})


def test_route_parents_status() -> None:
    gw = gateway(HTTP)
    key = ObjectKey("default", "shop")
    ok = ig.World(services={ObjectKey("default", "web")})
    parents = ig.route_parents(route(), "HTTPRoute", gw, key, ok)
    assert parents is not None and len(parents) == 1
    assert parents[0]["controllerName"] == "istio.io/gateway-controller" and parents[0]["parentRef"] == {"name": "shop"}
    assert {c["type"]: c["status"] for c in parents[0]["conditions"]} == {"Accepted": "True", "ResolvedRefs": "True"}

    missing = ig.route_parents(route(), "HTTPRoute", gw, key, ig.World())
    assert conds(missing[0])["ResolvedRefs"]["reason"] == "BackendNotFound"

    cross = route()
    cross["spec"]["rules"] = [{"backendRefs": [{"name": "web", "namespace": "shared", "port": 80}]}]
    world = ig.World(services={ObjectKey("shared", "web")})
    assert conds(ig.route_parents(cross, "HTTPRoute", gw, key, world)[0])["ResolvedRefs"]["reason"] == "RefNotPermitted"

    wrong_section = ig.route_parents(route(sectionName="nope"), "HTTPRoute", gw, key, ok)
    assert conds(wrong_section[0])["Accepted"]["reason"] == "NoMatchingParent"

    # Other controllers' entries stay; ours go when the Gateway does.
    mine = {"parentRef": {"name": "shop"}, "controllerName": "istio.io/gateway-controller", "conditions": []}
    theirs = {"parentRef": {"name": "shop"}, "controllerName": "example.com/other", "conditions": []}
    stale = route() | {"status": {"parents": [theirs, mine]}}
    assert ig.route_parents(stale, "HTTPRoute", None, key, ok) == [theirs]
    assert ig.route_parents(route(), "HTTPRoute", None, key, ok) is None


def test_deployment_shape() -> None:
    gw = gateway(HTTP, HTTPS, {"name": "http-alt", "port": 80, "protocol": "HTTP", "hostname": "x.io"})
    assert ig.service_ports(gw) == [
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "https", "port": 443, "protocol": "TCP"},
    ]
    pod = ig.desired_pod(gw, "shop-0", "node-1")
    assert pod["spec"]["serviceAccountName"] == "shop-istio"
    assert pod["spec"]["containers"][0]["command"] == ["waypoint", "--gateway", "default/shop", "--mode", "ingress"]
    assert pod["metadata"]["labels"] == {
        "gateway.networking.k8s.io/gateway-name": "shop",
        "gateway.istio.io/managed": "istio.io-gateway-controller",
        "istio.io/dataplane-mode": "none",
    }
    assert ig.certificate_keys(gw) == [ObjectKey("default", "cert")]


def test_addresses_list_ready_pod_ips_then_the_cluster_ip() -> None:
    gw = gateway(HTTP)
    service = {"spec": {"clusterIP": "198.19.0.40"}}

    def pod(name: str, ip: str, ready: bool = True) -> dict:
        labels = {"gateway.networking.k8s.io/gateway-name": "shop", "gateway.istio.io/managed": ig.MANAGED_VALUE}
        conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
        return {
            "metadata": {
                "name": name,
                "namespace": "default",
                "labels": labels,
                "ownerReferences": [{"kind": "Gateway", "name": "shop"}],
            },
            "spec": {"nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": ip, "conditions": conditions},
        }

    pods = [pod("shop-1", "198.18.0.21"), pod("shop-0", "198.18.0.20"), pod("shop-2", "198.18.0.22", ready=False)]
    assert ig.gateway_addresses([p for p in pods if p["status"]["conditions"][0]["status"] == "True"], service) == [
        {"type": "IPAddress", "value": "198.18.0.21"},
        {"type": "IPAddress", "value": "198.18.0.20"},
        {"type": "IPAddress", "value": "198.19.0.40"},
    ]
    addresses, _, _ = ig.gateway_status(gw, ig.World(), service, pods, [], 3, "")
    # Sorted by pod name, only ready pods, the clusterIP last.
    assert [a["value"] for a in addresses or []] == ["198.18.0.20", "198.18.0.21", "198.19.0.40"]
    assert ig.gateway_addresses([], {"spec": {"clusterIP": "None"}}) is None
    assert ig.gateway_addresses([], service) == [{"type": "IPAddress", "value": "198.19.0.40"}]


def test_xds_queues_the_gateways_a_change_concerns() -> None:
    store = ConfigStore()
    gw = gateway(HTTP, HTTPS)
    store.apply(GATEWAYS, gw, 1)
    waypoint = gateway(name="wp") | {"spec": {"gatewayClassName": "istio-waypoint", "listeners": []}}
    store.apply(GATEWAYS, waypoint, 2)
    secret = {"metadata": {"name": "cert", "namespace": "default"}}
    assert affected_ingress_gateways(store, [Change(Key(SECRETS, "default", "cert"), None, secret)]) == {
        ("default", "shop")
    }
    other = {"metadata": {"name": "other", "namespace": "default"}}
    assert affected_ingress_gateways(store, [Change(Key(SECRETS, "default", "other"), None, other)]) == set()
    r = route()
    assert affected_ingress_gateways(store, [Change(Key(HTTP_ROUTES, "default", "r"), None, r)]) == {
        ("default", "shop")
    }
    assert affected_ingress_gateways(store, [Change(Key(GATEWAYS, "default", "wp"), None, waypoint)]) == set()
    assert affected_ingress_gateways(store, [Change(Key(GATEWAYS, "default", "shop"), gw, None)]) == {
        ("default", "shop")
    }
