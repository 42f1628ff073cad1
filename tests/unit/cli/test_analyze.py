"""`meshctl analyze`: findings from status conditions and from the objects themselves."""

from __future__ import annotations

import json

from cli import analyze
from services.xds.model import AUTHORIZATION_POLICIES, GATEWAYS, HTTP_ROUTES, NAMESPACES, SERVICES
from tests.unit.cli.diagnostics_objects import namespace, policy, service, store_of, waypoint

L7_ONLY = {
    "type": "ZtunnelAccepted",
    "status": "True",
    "reason": "UnsupportedValue",
    "message": "ztunnel does not support HTTP attributes (found: methods)",
}


def lines(store, ns="default"):
    return [f.line() for f in analyze.analyze(store, ns)]


def test_no_findings_says_so_like_istioctl() -> None:
    store = store_of({NAMESPACES: [namespace("default")]})
    assert analyze.analyze(store, "default") == []
    assert analyze.render([], "default") == "✔ No validation issues found when analyzing namespace: default."
    assert analyze.render([], None) == "✔ No validation issues found when analyzing all namespaces."
    assert analyze.exit_code([]) == 0


def test_negative_and_partial_conditions_are_ist0171_warnings() -> None:
    accepted = {"type": "ZtunnelAccepted", "status": "True", "reason": "Accepted", "message": "attached to ztunnel"}
    gone = {"type": "WaypointAccepted", "status": "False", "reason": "TargetNotFound", "message": "no such Service"}
    store = store_of(
        {
            AUTHORIZATION_POLICIES: [
                policy("allow-get", {}, status={"conditions": [L7_ONLY]}),
                policy("fine", {}, status={"conditions": [accepted]}),
                policy("lost", {}, status={"conditions": [gone]}),
            ],
        }
    )
    assert lines(store) == [
        "Warning [IST0171] (AuthorizationPolicy default/allow-get) A condition reports a partial problem: "
        "type=ZtunnelAccepted, reason=UnsupportedValue, message=ztunnel does not support HTTP attributes "
        "(found: methods)",
        "Warning [IST0171] (AuthorizationPolicy default/lost) A condition with a negative status is present: "
        "type=WaypointAccepted, reason=TargetNotFound, message=no such Service",
    ]
    assert analyze.exit_code(analyze.analyze(store, "default")) == 0  # warnings only


def test_route_parent_and_gateway_conditions() -> None:
    route = {
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"parentRefs": []},
        "status": {
            "parents": [{"conditions": [{"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound"}]}]
        },
    }
    gw = waypoint(address=None)
    gw["status"]["conditions"] = [{"type": "Programmed", "status": "False", "reason": "Pending", "message": "0/1"}]
    store = store_of(
        {
            HTTP_ROUTES: [route],
            GATEWAYS: [gw],
            NAMESPACES: [
                namespace("default", **{"istio.io/use-waypoint": "waypoint", "istio.io/dataplane-mode": "ambient"})
            ],
        }
    )
    found = lines(store)
    assert (
        "Warning [IST0171] (Gateway default/waypoint) A condition with a negative status is present: "
        "type=Programmed, reason=Pending, message=0/1" in found
    )
    assert any(
        line.startswith("Warning [IST0171] (HTTPRoute default/r)") and "BackendNotFound" in line for line in found
    )


def test_dangling_use_waypoint_is_an_error_and_exit_79() -> None:
    store = store_of(
        {
            NAMESPACES: [namespace("default", **{"istio.io/dataplane-mode": "ambient"})],
            SERVICES: [service("reviews", "198.18.100.5", {"app": "r"}, **{"istio.io/use-waypoint": "missing"})],
        }
    )
    findings = analyze.analyze(store, "default")
    assert [f.line() for f in findings] == [
        'Error [IST0101] (Service default/reviews) Referenced waypoint not found: "default/missing" '
        "(label istio.io/use-waypoint); create it with: meshctl waypoint apply -n default --name missing, "
        "or fix the label"
    ]
    assert analyze.exit_code(findings) == 79


def test_unused_waypoint_and_namespace_not_ambient() -> None:
    store = store_of(
        {
            NAMESPACES: [namespace("default"), namespace("shop", **{"istio.io/use-waypoint": "wp"})],
            GATEWAYS: [waypoint(), waypoint("wp", ns="shop")],
        }
    )
    assert [f.code for f in analyze.analyze(store, "default")] == ["MESH0001"]
    shop = analyze.analyze(store, "shop")
    assert [(f.level, f.code, f.origin) for f in shop] == [("Warning", "MESH0002", "Namespace shop")]
    assert "kubectl label namespace shop istio.io/dataplane-mode=ambient" in shop[0].message
    assert {f.namespace or f.name for f in analyze.analyze(store, None)} == {"default", "shop"}


def test_missing_policy_target_and_route_parent() -> None:
    targets = {"targetRefs": [{"kind": "Service", "group": "", "name": "nope"}]}
    route = {
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "gone"}]},
    }
    store = store_of({AUTHORIZATION_POLICIES: [policy("p", targets)], HTTP_ROUTES: [route]})
    found = lines(store)
    assert (
        'Error [IST0101] (AuthorizationPolicy default/p) Referenced Service not found: "default/nope" '
        "(spec.targetRefs[0]); the policy applies nowhere until it exists" in found
    )
    assert any(
        line.startswith('Error [IST0101] (HTTPRoute default/r) Referenced Service not found: "default/gone"')
        for line in found
    )


def test_json_output_has_istioctl_fields() -> None:
    store = store_of({SERVICES: [service("s", "198.18.100.9", {"a": "b"}, **{"istio.io/use-waypoint": "x"})]})
    doc = json.loads(analyze.render(analyze.analyze(store, "default"), "default", "json"))
    assert doc[0]["code"] == "IST0101" and doc[0]["level"] == "Error" and doc[0]["origin"] == "Service default/s"
    assert doc[0]["documentationUrl"].endswith("/ist0101/")


def test_a_gateway_listener_condition_names_the_listener() -> None:
    gw = waypoint(address=None)
    gw["status"]["listeners"] = [
        {
            "name": "https",
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted"},
                {
                    "type": "ResolvedRefs",
                    "status": "False",
                    "reason": "InvalidCertificateRef",
                    "message": "Secret default/web-cert does not exist",
                },
            ],
        }
    ]
    found = lines(store_of({GATEWAYS: [gw], NAMESPACES: [namespace("default")]}))
    assert (
        "Warning [IST0171] (Gateway default/waypoint) listener https: A condition with a negative status is present: "
        "type=ResolvedRefs, reason=InvalidCertificateRef, message=Secret default/web-cert does not exist" in found
    )
