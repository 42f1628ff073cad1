"""meshctl waypoint's pure parts: the Gateway it writes, readiness, and the list table."""

from __future__ import annotations

import argparse

import pytest

from cli import waypoint


def test_manifest_is_istioctls_gateway_with_optional_annotations() -> None:
    plain = waypoint.gateway_manifest("default", "waypoint", None, None, None)
    assert plain["metadata"] == {"name": "waypoint", "namespace": "default"}
    assert plain["spec"] == {
        "gatewayClassName": "istio-waypoint",
        "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
    }
    full = waypoint.gateway_manifest("ns", "wp", "all", "reviews", 2)
    assert full["metadata"]["labels"] == {"istio.io/waypoint-for": "all"}
    assert full["metadata"]["annotations"] == {
        "gateway.istio.io/service-account": "reviews",
        "mesh.istio.io/replicas": "2",
    }
    stored = {**full, "metadata": {**full["metadata"], "labels": {"istio.io/waypoint-for": "all", "extra": "x"}}}
    assert waypoint.same_waypoint(stored, full)
    assert not waypoint.same_waypoint(plain, full)


def gw(*conditions: dict, name: str = "wp", ns: str = "default", labels: dict | None = None) -> dict:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"gatewayClassName": "istio-waypoint"},
        "status": {"conditions": list(conditions)},
    }


def test_readiness_says_what_is_missing() -> None:
    assert waypoint.readiness(gw())[1].startswith("no status yet")
    refused = {"type": "Accepted", "status": "False", "reason": "ListenersNotValid", "message": "needs HBONE"}
    assert waypoint.readiness(gw(refused)) == (False, "not accepted (ListenersNotValid): needs HBONE")
    pending = {"type": "Programmed", "status": "False", "reason": "Pending", "message": "wp-0 on n1 is Pending"}
    assert waypoint.readiness(gw(pending)) == (False, "Programmed=False (Pending): wp-0 on n1 is Pending")
    assert waypoint.readiness(gw({"type": "Programmed", "status": "True"})) == (True, "")


def test_list_table_and_empty() -> None:
    ready = gw({"type": "Programmed", "status": "True"}, name="a", labels={"istio.io/waypoint-for": "all"})
    other = gw(name="b", ns="shop", labels={"istio.io/rev": "canary"})
    assert waypoint.render_list([ready, other], False, "table").splitlines() == [
        "NAME   REVISION   TRAFFIC TYPE   PROGRAMMED",
        "a      default    all            True",
        "b      canary     service        False",
    ]
    assert waypoint.render_list([other], True, "table").splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert waypoint.render_list([], False, "table") == "No waypoints found."


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("2m", 120), ("0.5s", 0.5)])
def test_timeouts(text: str, seconds: float) -> None:
    assert waypoint._seconds(text) == seconds


def test_bad_timeout_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        waypoint._seconds("soon")
