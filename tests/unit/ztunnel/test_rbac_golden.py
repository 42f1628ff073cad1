"""Istio-documented policies end to end: mesh-xds's translation meets ztunnel's evaluation.

The Authorization resources are those of tests/golden/xds/authorization/ (what mesh-xds sends for
Istio's documented AuthorizationPolicy and PeerAuthentication examples, read-only here), loaded
through the store as xDS would deliver them. Each case lists connections and the decision
Istio's documentation gives for them.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from google.protobuf import json_format

from dataplane.ztunnel import rbac
from dataplane.ztunnel.state import AUTHORIZATION_TYPE_URL, StateStore, Workload
from mesh.identity import Identity
from mesh.proto_gen.istio.security import authorization_pb2 as authz
from tests.unit.ztunnel import builders as b

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "xds" / "authorization"


class Case(NamedTuple):
    destination: str  # ns/pod
    peer: str | None  # ns/sa, None for plaintext
    port: int
    allowed: bool
    deciding: str | None = None
    source_ip: str = "198.18.2.20"


def _wire(value: Any) -> Any:
    """The golden files show addresses as IP text; protobuf JSON wants base64 bytes."""
    if isinstance(value, dict):
        return {
            k: base64.b64encode(ipaddress.ip_address(v).packed).decode() if k == "address" else _wire(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def load(case: str) -> tuple[StateStore, dict[str, list[str]]]:
    data = json.loads((GOLDEN / f"{case}.json").read_text())
    updated = {
        name: json_format.ParseDict(_wire(body), authz.Authorization()) for name, body in data["authorizations"].items()
    }
    store = StateStore()
    assert store.apply(AUTHORIZATION_TYPE_URL, updated) == []
    return store, data.get("workload_policies", {})


def decide(case: str, expectation: Case, selected: dict[str, list[str]] | None = None) -> rbac.Decision:
    store, listed = load(case)
    listed = {**listed, **(selected or {})}
    namespace, name = expectation.destination.split("/")
    uid = b.pod_uid(namespace, name)
    destination = Workload.from_proto(b.workload(name, ["198.18.1.10"], namespace=namespace, policies=listed.get(uid)))
    peer = None
    if expectation.peer is not None:
        peer_ns, peer_sa = expectation.peer.split("/")
        peer = Identity("cluster.local", peer_ns, peer_sa)
    connection = rbac.Connection(
        source_identity=peer,
        source_ip=ipaddress.ip_address(expectation.source_ip),
        destination_ip=ipaddress.ip_address("198.18.1.10"),
        destination_port=expectation.port,
        destination_workload=destination,
    )
    return rbac.check(store, connection)


CASES: dict[str, list[Case]] = {
    "allow-nothing": [Case("foo/web", "foo/sleep", 80, False)],
    "allow-all": [Case("foo/web", None, 80, True, "foo/allow-all")],
    "deny-all": [Case("foo/web", "foo/sleep", 80, False, "foo/deny-all")],
    "allow-by-principal": [
        Case("foo/httpbin-1", "foo/sleep", 8000, True, "foo/httpbin"),
        Case("foo/httpbin-1", "bar/client", 8000, True, "foo/httpbin"),  # written with spiffe://
        Case("foo/httpbin-1", "foo/other", 8000, False),
        Case("foo/httpbin-1", None, 8000, False),
        Case("foo/sleep-1", "foo/other", 80, True),  # not selected
    ],
    "allow-by-namespace": [
        Case("bar/api", "foo/anyone", 80, True, "bar/from-namespaces"),
        Case("bar/api", "team-blue/anyone", 80, True, "bar/from-namespaces"),
        Case("bar/api", "sandbox/admin", 80, True, "bar/from-namespaces"),
        Case("bar/api", "sandbox/anyone", 80, False),
        Case("bar/api", "elsewhere/anyone", 80, True, "bar/from-namespaces"),
        Case("bar/api", None, 80, False),
    ],
    # Only HTTP attributes: the rule is dropped and the selected workload allows nothing.
    "allow-methods-only": [Case("foo/httpbin-1", "foo/sleep", 80, False)],
    "allow-mixed-l4-l7": [
        Case("foo/web", "bar/x", 8080, True, "foo/mixed"),
        Case("foo/web", "bar/x", 80, False),
        Case("foo/web", "foo/x", 8080, False),
    ],
    "deny-mixed-rules": [
        Case("foo/web", "untrusted/x", 80, False, "foo/deny-mixed"),  # notPaths stripped: all of port 80
        Case("foo/web", "untrusted/x", 8080, True),
        Case("foo/web", "partner/x", 80, True),  # its only other clause was HTTP: the rule is skipped
    ],
    "deny-not-namespaces": [
        Case("foo/web", "foo/sleep", 80, True),
        Case("foo/web", "bar/client", 80, False, "foo/only-foo"),
        Case("foo/web", None, 80, False, "foo/only-foo"),
    ],
    "deny-only-l7": [Case("foo/web", "bar/client", 80, True)],
    "deny-paths-and-ports": [
        Case("foo/web", "bar/client", 8080, False, "foo/deny-admin"),
        Case("foo/web", "bar/client", 80, True),
    ],
    "ip-blocks": [
        Case("foo/web", "bar/x", 80, True, "foo/ip-allow", source_ip="198.18.4.1"),
        Case("foo/web", "bar/x", 80, True, "foo/ip-allow", source_ip="198.18.7.254"),
        Case("foo/web", "bar/x", 80, False, source_ip="198.18.5.5"),
        Case("foo/web", "bar/x", 80, True, "foo/ip-allow", source_ip="198.18.9.9"),
        Case("foo/web", "bar/x", 80, True, "foo/ip-allow", source_ip="10.1.200.3"),
        Case("foo/web", "bar/x", 80, False, source_ip="198.18.8.1"),
    ],
    "root-namespace-global": [
        Case("shop/postgres-0", "sandbox/x", 5432, False, "istio-system/mesh-deny-sandbox"),
        Case("shop/postgres-0", "shop/api", 5432, True),
        Case("shop/postgres-0", "shop/api", 22, False, "istio-system/mesh-db-port"),
        Case("foo/web", "sandbox/x", 80, False, "istio-system/mesh-deny-sandbox"),
        Case("foo/web", "shop/api", 22, True),
    ],
    "service-accounts": [
        Case("shop/store", "shop/checkout", 80, True, "shop/by-service-account"),
        Case("shop/store", "payments/gateway", 80, True, "shop/by-service-account"),
        Case("shop/store", "shop/legacy", 80, False),
        Case("shop/store", None, 80, False),
    ],
    "when-source-ip": [
        Case("foo/web", "foo/sleep", 443, True, "foo/from-office", source_ip="203.0.113.5"),
        Case("foo/web", "foo/sleep", 443, False, source_ip="203.0.113.7"),
        Case("foo/web", "foo/sleep", 80, False, source_ip="203.0.113.5"),
        Case("foo/web", "bar/client", 443, False, source_ip="203.0.113.5"),
        Case("foo/web", "foo/sleep", 443, True, "foo/from-office", source_ip="2001:db8::1"),
    ],
    "when-l7-key-allow": [
        Case("foo/web", "bar/x", 80, True, "foo/jwt-group"),
        Case("foo/web", "bar/x", 15090, False),
    ],
    "pa-strict-namespace": [
        Case("foo/web-1", None, 80, False, "istio-system/istio_converted_static_strict"),
        Case("foo/web-1", "bar/api", 80, True),
        Case("bar/api-1", None, 80, True),
    ],
    "pa-strict-mesh": [
        Case("foo/web-1", None, 80, False, "istio-system/istio_converted_static_strict"),
        Case("bar/api-1", None, 80, False, "istio-system/istio_converted_static_strict"),
    ],
    "pa-namespace-overrides-mesh": [
        Case("foo/web-1", None, 80, False, "istio-system/istio_converted_static_strict"),
        Case("legacy/old-1", None, 80, True),
    ],
    "pa-permissive-strict-ports": [
        Case("data/db-0", None, 5432, False, "data/converted_peer_authentication_db"),
        Case("data/db-0", None, 9187, False, "data/converted_peer_authentication_db"),
        Case("data/db-0", None, 8080, True),
        Case("data/db-0", "shop/api", 5432, True),
    ],
    "pa-selector-permissive-port": [
        Case("foo/finance-1", None, 8080, True),
        Case("foo/finance-1", None, 9000, False, "foo/converted_peer_authentication_finance"),
        Case("foo/finance-1", "bar/x", 9000, True),
        Case("foo/web-1", None, 9000, True),
    ],
}

# Cases whose YAML has no pod: the workload a selector would pick lists the policy, as istiod does.
SELECTED = {"allow-methods-only": {b.pod_uid("foo", "httpbin-1"): ["foo/allow-get"]}}

PARAMS = [
    pytest.param(case, e, id=f"{case}:{e.destination}:{e.peer}:{e.port}") for case, es in CASES.items() for e in es
]


@pytest.mark.parametrize(("case", "expectation"), PARAMS)
def test_documented_policy_decisions(case: str, expectation: Case) -> None:
    decision = decide(case, expectation, SELECTED.get(case))
    assert (decision.allowed, decision.policy) == (expectation.allowed, expectation.deciding), decision.reason


def test_every_case_exists_in_the_golden_files() -> None:
    assert set(CASES) <= {p.stem for p in GOLDEN.glob("*.json")}
