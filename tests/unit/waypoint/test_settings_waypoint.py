"""The waypoint's settings: the contract's environment, flags over it, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataplane.waypoint.settings import ConfigError, WaypointSettings, resolve


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "root.pem").write_text("roots")
    values = {
        "MESH_POD_NAME": "wp-0",
        "MESH_POD_NAMESPACE": "shop",
        "MESH_POD_IP": "10.1.0.7",
        "MESH_SERVICE_ACCOUNT": "waypoint",
        "MESH_TOKEN_FILE": str(tmp_path / "token"),
        "MESH_ROOT_CERT": str(tmp_path / "root.pem"),
        "MESH_CA_ADDRESS": "10.0.0.1:15012",
        "MESH_XDS_ADDRESS": "10.0.0.1:15013",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return tmp_path


def test_contract_environment_resolves(env: Path) -> None:
    config = resolve(WaypointSettings(gateway="shop/wp"))
    assert (config.gateway, config.pod_name, config.pod_ip) == ("shop/wp", "wp-0", "10.1.0.7")
    assert str(config.identity) == "spiffe://cluster.local/ns/shop/sa/waypoint"
    assert (config.hbone_port, config.admin_port, config.metrics_port, config.readiness_port) == (
        15008,
        15000,
        15020,
        15021,
    )
    assert config.listen_address == "0.0.0.0" and config.hbone_upstream_port == 15008
    assert config.admin_address == "127.0.0.1"  # the pod's own loopback: other pods must not reach it
    assert config.token() == "tok"


def test_flags_override_environment(env: Path) -> None:
    config = resolve(WaypointSettings(gateway="shop/wp", pod_ip="127.0.0.9", trust_domain="example.org"))
    assert config.pod_ip == "127.0.0.9"
    assert str(config.identity) == "spiffe://example.org/ns/shop/sa/waypoint"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gateway": ""}, "MESH_GATEWAY= (missing"),
        ({"gateway": "nogate"}, "MESH_GATEWAY=nogate (expected NAMESPACE/NAME)"),
        ({"pod_ip": "not-an-ip"}, "MESH_POD_IP=not-an-ip (not an IP address)"),
        ({"xds_address": "nowhere"}, "MESH_XDS_ADDRESS=nowhere (expected HOST:PORT"),
        ({"token_file": Path("/nonexistent/token")}, "MESH_TOKEN_FILE=/nonexistent/token (no such file)"),
        ({"service_account": "Bad_SA"}, "MESH_SERVICE_ACCOUNT=Bad_SA ("),
        ({"listen_address": "localhost"}, "MESH_LISTEN_ADDRESS=localhost (not an IP address)"),
        ({"admin_address": "any"}, "MESH_ADMIN_ADDRESS=any (not an IP address)"),
    ],
)
def test_bad_settings_say_what_and_why(env: Path, change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        resolve(WaypointSettings(**{"gateway": "shop/wp", **change}))
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_missing_variable(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESH_CA_ADDRESS")
    with pytest.raises(ConfigError, match=r"^MESH_CA_ADDRESS= \(missing"):
        resolve(WaypointSettings(gateway="shop/wp"))


def test_otlp_endpoint(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve(WaypointSettings(gateway="shop/wp")).otlp_endpoint == ""  # no tracing by default
    monkeypatch.setenv("MESH_OTLP_ENDPOINT", "http://collector:4318/v1/traces")
    assert resolve(WaypointSettings(gateway="shop/wp")).otlp_endpoint == "http://collector:4318/v1/traces"
    monkeypatch.setenv("MESH_OTLP_ENDPOINT", "collector:4318")
    with pytest.raises(ConfigError, match=r"^MESH_OTLP_ENDPOINT=collector:4318 \(expected an http"):
        resolve(WaypointSettings(gateway="shop/wp"))
