"""`meshctl ztunnel-config` tables: istioctl's columns over a config_dump."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
import yaml

from cli import ztunnel_config as zc
from mesh.admin_http import admin_routes, serve

DUMP = {
    "workloads": [
        {
            "namespace": "default",
            "name": "sleep",
            "addresses": ["198.18.1.2"],
            "node": "node-1",
            "waypoint": None,
            "protocol": "HBONE",
        },
        {
            "namespace": "outside",
            "name": "legacy",
            "addresses": [],
            "node": "",
            "waypoint": "default/wp:15008",
            "protocol": "NONE",
        },
    ],
    "services": [
        {
            "namespace": "default",
            "hostname": "web.default.svc.cluster.local",
            "vips": ["/198.19.0.5"],
            "waypoint": None,
            "endpoints": {"a": {"status": "HEALTHY"}, "b": {"status": "UNHEALTHY"}},
        },
    ],
    "policies": [
        {"namespace": "istio-system", "name": "istio_converted_static_strict", "action": "DENY", "scope": "GLOBAL"}
    ],
    "certificates": [
        {
            "identity": "spiffe://cluster.local/ns/default/sa/sleep",
            "state": "Available",
            "certChain": [
                {
                    "serialNumber": "ab",
                    "expirationTime": "2026-01-02T00:00:00+00:00",
                    "validFrom": "2026-01-01T00:00:00+00:00",
                }
            ],
            "rootCert": [
                {
                    "serialNumber": "01",
                    "expirationTime": "2036-01-01T00:00:00+00:00",
                    "validFrom": "2026-01-01T00:00:00+00:00",
                }
            ],
        },
        {
            "identity": "spiffe://cluster.local/ns/default/sa/gone",
            "state": "Unavailable",
            "certChain": [],
            "rootCert": [],
        },
    ],
    "connections": [
        {
            "workload": "default/sleep",
            "direction": "outbound",
            "local": "198.18.2.2:8080",
            "remote": "198.18.1.2:40000",
            "remoteTarget": "198.18.2.2:8080",
            "protocol": "HBONE",
        }
    ],
}


def test_workloads_table() -> None:
    assert zc.render(DUMP, "workloads").splitlines() == [
        "NAMESPACE   POD NAME   ADDRESS      NODE     WAYPOINT           PROTOCOL",
        "default     sleep      198.18.1.2   node-1   None               HBONE",
        "outside     legacy     None         None     default/wp:15008   TCP",
    ]


def test_services_count_healthy_endpoints() -> None:
    lines = zc.render(DUMP, "svc").splitlines()
    assert lines[0].split() == ["NAMESPACE", "SERVICE", "NAME", "SERVICE", "VIP", "WAYPOINT", "ENDPOINTS"]
    assert lines[1].split() == ["default", "web.default.svc.cluster.local", "198.19.0.5", "None", "1/2"]


def test_a_waypoint_shows_by_the_name_of_the_service_at_its_address() -> None:
    dump = {
        "services": [
            {
                "namespace": "default",
                "name": "web",
                "hostname": "web.default.svc.cluster.local",
                "vips": ["/198.19.0.5"],
                "waypoint": "/198.19.0.9:15008",
                "endpoints": {},
            },
            {
                "namespace": "default",
                "name": "waypoint",
                "hostname": "waypoint.default.svc.cluster.local",
                "vips": ["/198.19.0.9"],
                "waypoint": None,
                "endpoints": {},
            },
        ],
        "workloads": [
            {
                "namespace": "default",
                "name": "web-0",
                "addresses": ["198.18.1.3"],
                "node": "node-1",
                "waypoint": "default/waypoint.default.svc.cluster.local:15008",
                "protocol": "HBONE",
            },
            {
                "namespace": "default",
                "name": "web-1",
                "addresses": ["198.18.1.4"],
                "node": "node-1",
                "waypoint": "/198.19.7.7:15008",
                "protocol": "HBONE",
            },
        ],
    }
    services = [line.split() for line in zc.render(dump, "services").splitlines()[1:]]
    assert [row[3] for row in services] == ["waypoint", "None"]
    workloads = [line.split() for line in zc.render(dump, "workloads").splitlines()[1:]]
    assert [row[4] for row in workloads] == ["waypoint", "/198.19.7.7:15008"]  # unknown: the address


def test_policies_and_connections() -> None:
    assert zc.render(DUMP, "policies").splitlines()[1].split() == [
        "istio-system",
        "istio_converted_static_strict",
        "DENY",
        "GLOBAL",
    ]
    assert zc.render(DUMP, "cons").splitlines()[1].split() == [
        "default/sleep",
        "outbound",
        "198.18.2.2:8080",
        "198.18.1.2:40000",
        "198.18.2.2:8080",
        "HBONE",
    ]


def test_certificates_have_a_leaf_and_a_root_row() -> None:
    lines = zc.render(DUMP, "certificates").splitlines()
    assert lines[0].split()[:3] == ["CERTIFICATE", "NAME", "TYPE"]
    assert [line.split()[1:4] for line in lines[1:]] == [
        ["Leaf", "Available", "true"],
        ["Root", "Available", "true"],
        ["Leaf", "Unavailable", "false"],
    ]


def test_all_has_every_section_and_json_yaml_give_the_raw_data() -> None:
    text = zc.render(DUMP, "all")
    for title in ("WORKLOAD INFO", "SERVICE INFO", "POLICY INFO", "SECRET INFO", "CONNECTIONS INFO"):
        assert title in text
    assert json.loads(zc.render(DUMP, "workloads", "json")) == DUMP["workloads"]
    assert yaml.safe_load(zc.render(DUMP, "all", "yaml")) == DUMP


def test_the_admin_is_found_in_the_node_namespace_node_json_names(tmp_path: Path) -> None:
    (tmp_path / "nodes" / "node-2").mkdir(parents=True)
    info = {"name": "node-2", "netns": "mesh-node-2", "ip": "198.19.255.12"}
    (tmp_path / "nodes" / "node-2" / "node.json").write_text(json.dumps(info))
    assert zc.default_node(tmp_path) == "node-2"
    admin = zc.locate(tmp_path, "node-2")
    assert admin == zc.AdminAddress("mesh-node-2", 15000)
    assert str(admin) == "127.0.0.1:15000 in network namespace mesh-node-2"
    with pytest.raises(zc.ZtunnelConfigError, match=r"no node node-9 .*\(its nodes: node-2\)"):
        zc.locate(tmp_path, "node-9")


def test_on_a_node_itself_the_admin_is_in_this_namespace(tmp_path: Path) -> None:
    # A compose node container: its state directory is the node's own, node.json at the top.
    (tmp_path / "node.json").write_text(json.dumps({"name": "node-1", "ip": "198.19.254.21"}))
    assert zc.default_node(tmp_path) == "node-1"
    assert zc.locate(tmp_path, "node-1", 15100) == zc.AdminAddress(None, 15100)


async def test_the_dump_is_read_from_a_real_admin_port_on_loopback() -> None:
    server = await serve("127.0.0.1", 0, admin_routes("ztunnel", lambda: DUMP, lambda: None))
    port = server.sockets[0].getsockname()[1]
    try:
        assert await asyncio.to_thread(zc.fetch, zc.AdminAddress(None, port)) == DUMP
    finally:
        server.close()
        await server.wait_closed()
    with pytest.raises(zc.ZtunnelConfigError, match=f"ztunnel did not answer: GET /config_dump on 127.0.0.1:{port}"):
        await asyncio.to_thread(zc.fetch, zc.AdminAddress(None, port))


async def test_log_shows_and_changes_a_running_proxys_levels() -> None:
    root, access = logging.getLogger(), logging.getLogger("ztunnel.access")
    saved = root.level, access.level
    root.setLevel(logging.INFO)
    server = await serve("127.0.0.1", 0, admin_routes("ztunnel", dict, lambda: None))
    admin = zc.AdminAddress(None, server.sockets[0].getsockname()[1])
    try:
        assert await asyncio.to_thread(zc.log_levels, admin) == "current log level is info"
        changed = await asyncio.to_thread(zc.log_levels, admin, "warn,access:debug")
        assert changed == "current log level is warn,access=debug"
        assert (root.level, access.level) == (logging.WARNING, logging.DEBUG)
        with pytest.raises(zc.ZtunnelConfigError, match="refused: bad level: unknown level 'noisy'"):
            await asyncio.to_thread(zc.log_levels, admin, "noisy")
        assert await asyncio.to_thread(zc.log_levels, admin, None, True) == "current log level is info"
        assert (root.level, access.level) == (logging.INFO, logging.NOTSET)
    finally:
        server.close()
        await server.wait_closed()
        root.setLevel(saved[0])
        access.setLevel(saved[1])


def test_a_namespace_narrows_every_section() -> None:
    default = zc.in_namespace(DUMP, "default")
    assert [w["name"] for w in default["workloads"]] == ["sleep"]
    assert [s["hostname"] for s in default["services"]] == ["web.default.svc.cluster.local"]
    assert default["policies"] == []  # istio-system's
    assert [c["identity"] for c in default["certificates"]] == [
        "spiffe://cluster.local/ns/default/sa/sleep",
        "spiffe://cluster.local/ns/default/sa/gone",
    ]
    assert len(default["connections"]) == 1
    outside = zc.in_namespace(DUMP, "outside")
    assert [w["name"] for w in outside["workloads"]] == ["legacy"]
    assert outside["services"] == outside["certificates"] == outside["connections"] == []
    assert zc.render(zc.in_namespace(DUMP, "nowhere"), "workloads").splitlines() == [
        "NAMESPACE   POD NAME   ADDRESS   NODE   WAYPOINT   PROTOCOL"
    ]
