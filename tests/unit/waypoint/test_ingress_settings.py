"""`--mode`: waypoint by default; ingress changes the node id, metadata and Listener name
(docs/ingress.md, "Data path (contract)")."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataplane.waypoint.settings import ConfigError, WaypointSettings, resolve
from dataplane.waypoint.xds_client import listener_name, node_id, node_metadata
from tests.unit.waypoint.test_settings_waypoint import env  # noqa: F401  (the contract's environment)


def test_waypoint_is_the_default(env: Path) -> None:  # noqa: F811
    config = resolve(WaypointSettings(gateway="shop/wp"))
    assert (config.mode, config.ingress) == ("waypoint", False)
    assert node_id(config) == "waypoint~10.1.0.7~wp-0.shop~shop.svc.cluster.local"
    assert listener_name(config) == "waypoint/shop/wp"
    assert node_metadata(config) == {"NAMESPACE": "shop", "NAME": "wp-0", "WAYPOINT": "shop/wp"}


def test_ingress_mode(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("MESH_SERVICE_ACCOUNT", "gw-istio")
    config = resolve(WaypointSettings(gateway="shop/gw", mode="ingress"))
    assert config.ingress
    assert node_id(config) == "router~10.1.0.7~wp-0.shop~shop.svc.cluster.local"
    assert listener_name(config) == "gateway/shop/gw"
    assert node_metadata(config)["MODE"] == "ingress"
    assert str(config.identity) == "spiffe://cluster.local/ns/shop/sa/gw-istio"


def test_mode_from_the_environment(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("MESH_MODE", "ingress")
    assert resolve(WaypointSettings(gateway="shop/gw")).ingress


def test_bad_mode_says_what_and_why(env: Path) -> None:  # noqa: F811
    with pytest.raises(ConfigError) as e:
        resolve(WaypointSettings(gateway="shop/gw", mode="sidecar"))
    assert str(e.value) == "MESH_MODE=sidecar (expected one of: waypoint, ingress)"
