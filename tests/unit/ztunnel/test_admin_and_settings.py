"""config_dump shaping, settings resolution, the xDS client's pure rules, readiness and the
certificate prefetch set."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from dataplane.ztunnel.config_dump import (
    CertificateView,
    certificate_json,
    gateway,
    policy_json,
    services_json,
    workload_json,
)
from dataplane.ztunnel.identity import Prefetcher
from dataplane.ztunnel.readiness import Readiness
from dataplane.ztunnel.settings import ConfigError, ZtunnelSettings, resolve
from dataplane.ztunnel.state import GatewayAddress, NamespacedHostname, Policy, Service, Workload
from dataplane.ztunnel.xds_client import node_id
from mesh.certs.certificate import certificate_from_chain
from mesh.certs.manager import CertificateStatus, CertState
from mesh.identity import Identity
from mesh.proto_gen.istio.security import authorization_pb2 as authz
from mesh.xds.ads_stream import MAX_BACKOFF, next_backoff
from tests.unit.hbone.pki import Pki

from . import builders as b

WEB = Identity("cluster.local", "default", "web-api")


def test_workload_json_is_camel_case_with_text_addresses() -> None:
    workload = Workload.from_proto(
        b.workload("web", ["198.18.2.2"], sa="web-api", services={"default/web": {80: 8080}})
    )
    out = workload_json(workload)
    assert out["addresses"] == ["198.18.2.2"]
    assert out["serviceAccount"] == "web-api" and out["identity"] == str(WEB)
    assert out["protocol"] == "HBONE" and out["services"] == {"default/web": {"80": 8080}}
    json.dumps(out)  # everything is JSON


def test_services_json_lists_endpoints_with_their_health() -> None:
    service = Service.from_proto(b.service("web", ["198.19.0.5"], {80: 8080}))
    key = service.key
    healthy = Workload.from_proto(b.workload("a", ["198.18.1.2"], services={key: {80: 8080}}))
    sick = Workload.from_proto(b.workload("b", ["198.18.1.3"], services={key: {80: 8080}}, healthy=False))
    (out,) = services_json([service], [healthy, sick, Workload.from_proto(b.workload("c", ["198.18.1.4"]))])
    assert out["vips"] == ["/198.19.0.5"]
    assert {uid: e["status"] for uid, e in out["endpoints"].items()} == {
        healthy.uid: "HEALTHY",
        sick.uid: "UNHEALTHY",
    }


def test_policy_json_keeps_rules_readable() -> None:
    message = authz.Authorization(name="p", namespace="default", scope=authz.NAMESPACE, action=authz.DENY)
    match = message.rules.add().rules.add().matches.add()
    match.principals.add(exact="cluster.local/ns/default/sa/sleep")
    match.source_ips.add(address=b.raw("10.0.0.0"), length=8)
    out = policy_json(Policy.from_proto(message))
    assert out["key"] == "default/p" and out["action"] == "DENY" and out["scope"] == "NAMESPACE"
    (clause,) = out["rules"][0]
    assert clause[0]["principals"] == [{"kind": "exact", "value": "cluster.local/ns/default/sa/sleep"}]
    assert clause[0]["sourceIps"] == ["10.0.0.0/8"]


def test_gateway_text() -> None:
    assert gateway(GatewayAddress(NamespacedHostname("ns", "wp.ns.svc"), 15008)) == "ns/wp.ns.svc:15008"
    assert gateway(None) is None


def test_certificate_json_shows_serial_validity_issuer_and_key() -> None:
    pki = Pki()
    made = pki.workload("web-api")
    chain = [p + "-----END CERTIFICATE-----\n" for p in made.chain_pem.split("-----END CERTIFICATE-----")[:-1]]
    cert = certificate_from_chain(WEB, made.key_pem, chain)
    status = CertificateStatus(WEB, CertState.AVAILABLE, cert.serial, cert.not_before, cert.not_after)
    out = certificate_json(CertificateView(status, cert))
    assert out["identity"] == str(WEB) and out["state"] == "Available"
    (leaf,) = out["certChain"]
    assert leaf["serialNumber"] == cert.serial
    assert leaf["issuer"] == "O=cluster.local" and leaf["keyAlgorithm"] == "ECDSA secp256r1"
    assert leaf["expirationTime"].endswith("Z")  # as ztunnel and istioctl write times
    assert datetime.fromisoformat(leaf["expirationTime"]) == cert.not_after.replace(microsecond=0)
    assert len(out["rootCert"]) == 1


def test_certificate_json_without_a_certificate() -> None:
    status = CertificateStatus(WEB, CertState.UNAVAILABLE, error="denied")
    out = certificate_json(CertificateView(status, None))
    assert out == {
        "identity": str(WEB),
        "state": "Unavailable",
        "certChain": [],
        "rootCert": [],
        "nextRefresh": None,
        "error": "denied",
    }


def _node_dir(tmp_path: Path, **info: str) -> Path:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "roots.pem").write_text("roots")
    base = {
        "name": "node-1",
        "ip": "198.19.255.11",
        "ca": "198.19.255.1:15012",
        "xds": "198.19.255.1:15010",
        "root_cert": str(tmp_path / "roots.pem"),
    }
    (tmp_path / "node.json").write_text(json.dumps({**base, **info}))
    return tmp_path


def test_settings_come_from_node_json_and_flags_win(tmp_path: Path) -> None:
    node = _node_dir(tmp_path)
    config = resolve(ZtunnelSettings(state_dir=node))
    assert (config.node, config.node_ip, config.xds_address) == ("node-1", "198.19.255.11", "198.19.255.1:15010")
    assert config.zds_socket == node / "ztunnel" / "zds.sock" and config.token() == "tok"
    assert config.cert_ttl.total_seconds() == 86400
    assert config.admin_address == "127.0.0.1"  # the admin port is the node's own, not the pods'
    assert config.dns is None  # no pod_cidr in this node.json: no name server
    assert resolve(ZtunnelSettings(state_dir=_node_dir(tmp_path, pod_cidr="198.18.3.0/24"))).dns == ("198.18.3.1", 53)
    assert resolve(ZtunnelSettings(state_dir=node, dns_address="127.0.0.9:5353")).dns == ("127.0.0.9", 5353)
    assert resolve(ZtunnelSettings(state_dir=node, dns_address="off")).dns is None
    config = resolve(ZtunnelSettings(state_dir=node, node="other", cert_ttl=60, ca_address="127.0.0.1:1"))
    assert (config.node, config.ca_address, config.cert_ttl.total_seconds()) == ("other", "127.0.0.1:1", 60)


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ({"xds": ""}, "MESH_XDS_ADDRESS= (missing"),
        ({"ca": "nowhere"}, "MESH_CA_ADDRESS=nowhere"),
        ({"root_cert": "/nonexistent.pem"}, "MESH_ROOT_CERT=/nonexistent.pem (no such file)"),
    ],
)
def test_settings_errors_name_the_setting(tmp_path: Path, info: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(ZtunnelSettings(state_dir=_node_dir(tmp_path, **info)))


def test_a_dns_address_that_is_no_ip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"MESH_DNS_ADDRESS=gateway \(expected auto, off, IP or IP:PORT\)"):
        resolve(ZtunnelSettings(state_dir=_node_dir(tmp_path), dns_address="gateway"))


def test_an_admin_address_that_is_no_ip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"MESH_ADMIN_ADDRESS=localhost \(not an IP address\)"):
        resolve(ZtunnelSettings(state_dir=_node_dir(tmp_path), admin_address="localhost"))


def test_xds_node_id_and_back_off() -> None:
    assert node_id("node-1", "198.19.255.11") == (
        "ztunnel~198.19.255.11~ztunnel-node-1.istio-system~istio-system.svc.cluster.local"
    )
    delays = [0.01]
    while delays[-1] < MAX_BACKOFF:
        delays.append(next_backoff(delays[-1]))
    assert delays[:4] == [0.01, 0.02, 0.04, 0.08] and delays[-1] == 15.0 and next_backoff(15.0) == 15.0


def test_readiness_waits_for_every_token() -> None:
    readiness = Readiness()
    readiness.register("xds")
    readiness.register("zds")
    readiness.mark_ready("xds")
    assert not readiness.ready and readiness.pending() == ["zds"]
    readiness.mark_ready("zds")
    assert readiness.ready


class _Certs:
    def __init__(self) -> None:
        self.prefetched: list[str] = []
        self.forgotten: list[str] = []

    def prefetch(self, identity: Identity) -> None:
        self.prefetched.append(identity.service_account)

    def forget(self, identity: Identity) -> None:
        self.forgotten.append(identity.service_account)


def test_prefetch_follows_the_nodes_service_accounts_and_keeps_those_in_use() -> None:
    certs = _Certs()
    prefetcher = Prefetcher(certs)  # type: ignore[arg-type]
    ids = {sa: Identity("cluster.local", "default", sa) for sa in ("a", "b", "c")}
    prefetcher.update({ids["a"], ids["b"]}, set())
    prefetcher.update({ids["a"], ids["b"]}, set())  # nothing new: nothing asked twice
    assert sorted(certs.prefetched) == ["a", "b"]
    prefetcher.update({ids["a"]}, {ids["c"]})  # b left the node; c is held by a pod being served
    assert sorted(certs.prefetched) == ["a", "b", "c"] and certs.forgotten == ["b"]
    assert prefetcher.managed == {ids["a"], ids["c"]}
