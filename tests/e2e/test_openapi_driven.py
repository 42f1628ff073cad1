"""OpenAPI-driven end to end, as root, on a real 2-node netns cluster: every object is created
through tests/openapi_client.py, which finds each kind's operations and request schema in
istiod's own `/openapi/v3` documents and validates each body before sending it.

In a fresh namespace `oa` (labelled ambient): `server` on node-2 behind the Service `server`,
and two clients on node-1, `alpha` and `beta`, each with its own service account. After each
policy step the real traffic outcome from inside each client pod is asserted: an HTTP 200 from
the server, or a connection refused/reset by the server's ztunnel.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mesh import netns
from tests import harness
from tests.e2e import meshops as ops
from tests.e2e.test_cluster import api, leftovers, meshctl
from tests.openapi_client import ApiError, OpenApiClient, SchemaRejected

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

NS = "oa"
NODE_IPS = ("198.19.255.11", "198.19.255.12")
PODS = {"server": "node-2", "alpha": "node-1", "beta": "node-1"}  # service account = pod name
SECURITY = "security.istio.io/v1"


@dataclass
class Mesh:
    state: Path
    client: OpenApiClient
    pods: dict[str, dict]
    vip: str

    def reaches(self, source: str, target: str = "server") -> bool:
        """An HTTP 200 from the server, from inside `source` (by pod IP, or by Service VIP)."""
        ip, port = (self.vip, 80) if target == "vip" else (self.pods["server"]["status"]["podIP"], ops.HTTP_PORT)
        return ops.http_get(self.pods[source], ip, port, timeout=3) is not None

    def outcome(self) -> dict[str, bool]:
        return {source: self.reaches(source) for source in ("alpha", "beta")}

    def policy(self, name: str, spec: dict) -> dict:
        body = {"apiVersion": SECURITY, "kind": "AuthorizationPolicy", "metadata": {"name": name, "namespace": NS}}
        return self.client.create(body | {"spec": spec})


def _running(client: OpenApiClient, name: str) -> dict | None:
    pod = client.get("v1", "Pod", name, NS)
    status = pod.get("status") or {}
    return pod if status.get("phase") == "Running" and status.get("podIP") else None


def _workloads_on_hbone() -> bool:
    for ip in NODE_IPS:
        workloads = [w for w in ops.config_dump(ip)["workloads"] if w["namespace"] == NS]
        if len(workloads) < len(PODS) or any(w["protocol"] != "HBONE" for w in workloads):
            return False
    return True


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    harness.need("root", os.geteuid() == 0)
    harness.need("redis", harness.port_open("127.0.0.1", 6379))
    if netns.exists("mesh-underlay"):
        pytest.skip("a cluster is already up on this machine (meshctl cluster down first)")
    state = tmp_path_factory.mktemp("oacluster")
    try:
        meshctl("cluster", "up", "--nodes", "2", "--state-dir", str(state))
        with api(state) as http:
            client = OpenApiClient.discover(http)
            client.create(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": NS, "labels": {"istio.io/dataplane-mode": "ambient"}},
                }
            )
            for name, node in PODS.items():
                client.create(ops.app_pod(name, node, name, name, NS))
            service = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "server", "namespace": NS},
                "spec": {"selector": {"app": "server"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            }
            vip = client.create(service)["spec"]["clusterIP"]
            pods = {name: ops.wait(lambda n=name: _running(client, n), 30, f"pod {name} running") for name in PODS}
            ops.wait(_workloads_on_hbone, 30, "both ztunnels to see the oa pods on HBONE")
            yield Mesh(state, client, pods, vip)
    finally:
        down = meshctl("cluster", "down", "--state-dir", str(state), check=False)
        assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers() == {"netns": [], "etc_netns": [], "links": [], "routes": []}
    assert not subprocess.run(["pgrep", "-f", str(state)], capture_output=True).stdout, "processes left behind"


def test_the_client_found_every_kind_it_uses_in_the_served_documents(mesh: Mesh) -> None:
    assert {"api/v1", "apis/security.istio.io/v1"} <= set(mesh.client.documents)
    names = {p["metadata"]["name"] for p in mesh.client.list("v1", "Pod", NS)}
    assert names == set(PODS)
    assert mesh.client.get("v1", "Namespace", NS)["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"


def test_without_policies_both_clients_reach_the_server(mesh: Mesh) -> None:
    ops.wait(lambda: mesh.outcome() == {"alpha": True, "beta": True}, 20, "both clients to reach the server")
    assert mesh.reaches("alpha", "vip") and mesh.reaches("beta", "vip")


def test_allow_nothing_then_allow_one_service_account(mesh: Mesh) -> None:
    mesh.policy("allow-nothing", {})
    ops.wait(lambda: mesh.outcome() == {"alpha": False, "beta": False}, 15, "allow-nothing to deny both clients")
    assert not mesh.reaches("alpha", "vip")

    principal = f"cluster.local/ns/{NS}/sa/alpha"
    mesh.policy(
        "allow-alpha",
        {
            "selector": {"matchLabels": {"app": "server"}},
            "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": [principal]}}]}],
        },
    )
    ops.wait(lambda: mesh.outcome() == {"alpha": True, "beta": False}, 15, "the ALLOW to let only alpha in")
    assert mesh.reaches("alpha", "vip") and not mesh.reaches("beta", "vip")
    for _ in range(3):  # steady, not a transient
        assert mesh.outcome() == {"alpha": True, "beta": False}

    names = {p["metadata"]["name"] for p in mesh.client.list(SECURITY, "AuthorizationPolicy", NS)}
    assert names == {"allow-nothing", "allow-alpha"}
    for name in names:
        mesh.client.delete(SECURITY, "AuthorizationPolicy", name, NS)
    ops.wait(lambda: mesh.outcome() == {"alpha": True, "beta": True}, 15, "both clients allowed again")


def test_a_body_the_schema_rejects_is_refused_by_the_client_and_by_istiod(mesh: Mesh) -> None:
    spec = {"selector": {"matchLabels": {"app": "server"}}, "action": "PERMIT"}
    with pytest.raises(SchemaRejected) as refused:
        mesh.policy("bad", spec)
    assert any(e.startswith("spec.action:") for e in refused.value.errors), refused.value.errors

    body = {"apiVersion": SECURITY, "kind": "AuthorizationPolicy", "metadata": {"name": "bad", "namespace": NS}}
    with pytest.raises(ApiError) as rejected:
        mesh.client.create(body | {"spec": spec}, validate=False)
    assert rejected.value.code == 422 and rejected.value.status["reason"] == "Invalid", rejected.value.status
    assert "spec.action" in str(rejected.value.status)
    with pytest.raises(ApiError) as missing:  # nothing was stored
        mesh.client.get(SECURITY, "AuthorizationPolicy", "bad", NS)
    assert missing.value.code == 404
    assert mesh.outcome() == {"alpha": True, "beta": True}
