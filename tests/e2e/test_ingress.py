"""Ingress gateway end to end, as root, on a real 2-node netns cluster made by `meshctl cluster up`.

Namespace `default` is ambient: `web-api-v1` (node-2) behind the Service `web-api`, `sleep`
(node-1). An HTTPS Gateway `edge` (class istio) terminates TLS for `web.example.test` with a
certificate from a test CA and routes to web-api; the client is the host itself (the root
namespace), as a user outside the mesh would be, with curl and the CA file.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mesh import netns
from tests import harness
from tests.e2e import meshops as ops
from tests.e2e.test_cluster import api, leftovers, meshctl, wait_running
from tests.minica import MiniCa

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

GATEWAYS = "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways"
ROUTES = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes"
EDGE_ID = "spiffe://cluster.local/ns/default/sa/edge-istio"
WEB_ID = "spiffe://cluster.local/ns/default/sa/web-api"
EDGE_REF = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}
NODE_IP = {"node-1": "198.19.255.11", "node-2": "198.19.255.12"}


@dataclass
class Edge:
    state: Path
    client: httpx.Client
    pods: dict[str, dict]
    ca_file: Path
    address: str

    def curl(self, path: str = "/", *args: str) -> tuple[int, str]:
        """HTTPS through the gateway from the host: (status, body); status 0 when refused."""
        out = subprocess.run(
            [
                "curl",
                "-s",
                "-m",
                "5",
                "--resolve",
                f"web.example.test:443:{self.address}",
                "--cacert",
                str(self.ca_file),
                "-w",
                "\n%{http_code}",
                *args,
                f"https://web.example.test{path}",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        body, _, code = out.stdout.rpartition("\n")
        return int(code or 0), body

    def apply(self, path: str, body: dict) -> str:
        name = body["metadata"]["name"]
        existing = self.client.get(f"{path}/{name}")
        if existing.status_code == 200:
            body["metadata"]["resourceVersion"] = existing.json()["metadata"]["resourceVersion"]
            self.client.put(f"{path}/{name}", json=body).raise_for_status()
        else:
            self.client.post(path, json=body).raise_for_status()
        return f"{path}/{name}"


def _tls_secret(name: str, chain: bytes, key: bytes) -> dict:
    data = {"tls.crt": base64.b64encode(chain).decode(), "tls.key": base64.b64encode(key).decode()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "kubernetes.io/tls", "data": data}


def _gateway(secret: str) -> dict:
    listener = {
        "name": "https",
        "hostname": "web.example.test",
        "port": 443,
        "protocol": "HTTPS",
        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]},
    }
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge"},
        "spec": {"gatewayClassName": "istio", "listeners": [listener]},
    }


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    harness.need("root", os.geteuid() == 0)
    harness.need("redis", harness.port_open("127.0.0.1", 6379))
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    if netns.exists("mesh-underlay"):
        pytest.skip("a cluster is already up on this machine (meshctl cluster down first)")
    state = tmp_path_factory.mktemp("icluster")
    ca = MiniCa("web-ca")
    cert = ca.issue(("web.example.test",))
    ca_file = state / "web-ca.pem"
    ca_file.write_bytes(ca.pem)
    try:
        meshctl("cluster", "up", "--nodes", "2", "--state-dir", str(state))
        with api(state) as client:
            for name, node, sa in (("web-api-v1", "node-2", "web-api"), ("sleep", "node-1", "sleep")):
                body = ops.app_pod(name, node, sa, "web-api" if sa == "web-api" else name, version="v1")
                client.post("/api/v1/namespaces/default/pods", json=body).raise_for_status()
            service = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web-api"},
                "spec": {"selector": {"app": "web-api"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            }
            client.post("/api/v1/namespaces/default/services", json=service).raise_for_status()
            pods = {n: wait_running(client, "default", n) for n in ("web-api-v1", "sleep")}
            client.patch(
                "/api/v1/namespaces/default",
                json={"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}},
                headers={"Content-Type": "application/merge-patch+json"},
            ).raise_for_status()
            client.post(
                "/api/v1/namespaces/default/secrets", json=_tls_secret("web-cert", cert.chain_pem, cert.key_pem)
            )
            client.post(GATEWAYS, json=_gateway("web-cert")).raise_for_status()
            route = {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "web"},
                "spec": {
                    "parentRefs": [{"name": "edge"}],
                    "hostnames": ["web.example.test"],
                    "rules": [{"backendRefs": [{"name": "web-api", "port": 80}]}],
                },
            }
            client.post(ROUTES, json=route).raise_for_status()

            def programmed() -> str | None:
                status = client.get(f"{GATEWAYS}/edge").json().get("status") or {}
                ok = any(c["type"] == "Programmed" and c["status"] == "True" for c in status.get("conditions", []))
                return status["addresses"][0]["value"] if ok and status.get("addresses") else None

            address = ops.wait(programmed, 60, "the gateway to be programmed")
            edge = Edge(state, client, pods, ca_file, address)
            ops.wait(lambda: edge.curl()[0] == 200, 30, "HTTPS through the gateway")
            yield edge
    finally:
        meshctl("cluster", "down", "--state-dir", str(state), check=False)
    assert leftovers() == {"netns": [], "etc_netns": [], "links": [], "routes": []}
    assert not subprocess.run(["pgrep", "-f", str(state)], capture_output=True).stdout, "processes left behind"


def test_https_through_the_gateway_reaches_web_api_with_the_gateway_identity(edge: Edge) -> None:
    status, body = edge.curl("/hello")
    assert status == 200
    answer = json.loads(body)
    assert answer["name"] == "v1" and answer["path"] == "/hello"
    # web-api's ztunnel (node-2) saw the gateway's own SPIFFE identity as the source
    assert ops.tcp_opened(NODE_IP["node-2"], EDGE_ID, WEB_ID) >= 1
    # and the gateway reports the request as the source reporter
    pod = edge.client.get("/api/v1/namespaces/default/pods/edge-0").json()
    with ops.HttpClient(pod, pod["status"]["podIP"], 15020) as client:
        metrics = client.request("GET", "/stats/prometheus").body.decode()
    assert ops.metric_sum(metrics, "istio_requests_total", reporter="source", response_code="200") >= 1


def test_only_traffic_through_the_gateway_gets_in(edge: Edge) -> None:
    security = f"{ops.SECURITY}/default/authorizationpolicies"
    base = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy"}
    nothing = edge.apply(security, {**base, "metadata": {"name": "allow-nothing"}, "spec": {}})
    allow = {
        "selector": {"matchLabels": {"app": "web-api"}},
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/edge-istio"]}}]}],
    }
    gateway_only = edge.apply(security, {**base, "metadata": {"name": "web-from-edge"}, "spec": allow})
    web_ip = edge.pods["web-api-v1"]["status"]["podIP"]
    try:
        ops.wait(lambda: ops.http_get(edge.pods["sleep"], web_ip) is None, 20, "sleep to be refused")
        assert edge.curl()[0] == 200
    finally:
        edge.client.delete(gateway_only)
        edge.client.delete(nothing)
    ops.wait(lambda: ops.http_get(edge.pods["sleep"], web_ip) is not None, 20, "sleep to be let in again")


def test_a_jwt_requirement_at_the_gateway(edge: Edge) -> None:
    from tests.e2e.test_waypoint import _jwt_fixtures

    jwks, sign = _jwt_fixtures()
    authn = {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "edge-jwt"},
        "spec": {"targetRefs": [EDGE_REF], "jwtRules": [{"issuer": "https://issuer.e2e.test", "jwks": jwks}]},
    }
    authn_url = edge.apply(f"{ops.SECURITY}/default/requestauthentications", authn)
    require = {
        "targetRefs": [EDGE_REF],
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}],
    }
    policy_url = edge.apply(
        f"{ops.SECURITY}/default/authorizationpolicies",
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "edge-jwt"},
            "spec": require,
        },
    )
    token = sign({})
    try:
        ops.wait(lambda: edge.curl()[0] in (401, 403), 20, "the JWT requirement to apply")
        assert edge.curl("/", "-H", f"Authorization: Bearer {token}")[0] == 200
        assert edge.curl("/", "-H", "Authorization: Bearer not.a.token")[0] == 401
    finally:
        edge.client.delete(policy_url)
        edge.client.delete(authn_url)
    ops.wait(lambda: edge.curl()[0] == 200, 20, "the requirement to go away")


def test_a_missing_certificate_shows_as_a_listener_condition_and_in_analyze(edge: Edge) -> None:
    body = _gateway("no-such-secret")
    body["metadata"]["name"] = "broken"
    edge.client.post(GATEWAYS, json=body).raise_for_status()
    try:

        def resolved_refs() -> dict | None:
            status = edge.client.get(f"{GATEWAYS}/broken").json().get("status") or {}
            for listener in status.get("listeners", []):
                for c in listener.get("conditions", []):
                    if c["type"] == "ResolvedRefs" and c["status"] == "False":
                        return c
            return None

        condition = ops.wait(resolved_refs, 30, "ResolvedRefs False on the broken gateway")
        assert condition["reason"] == "InvalidCertificateRef" and "no-such-secret" in condition["message"]
        kubeconfig = str(edge.state / "kubeconfig")
        out = meshctl("analyze", "-n", "default", "--kubeconfig", kubeconfig, check=False)
        assert "Gateway default/broken" in out.stdout and "no-such-secret" in out.stdout, out.stdout
        shown = meshctl("gateway", "status", "broken", "-n", "default", "--kubeconfig", kubeconfig, check=False)
        assert shown.returncode == 1 and "InvalidCertificateRef" in shown.stdout, shown.stdout
    finally:
        edge.client.delete(f"{GATEWAYS}/broken")


def test_ingress_use_waypoint_applies_the_waypoint_policy_to_ingress_traffic(edge: Edge) -> None:
    kubeconfig = str(edge.state / "kubeconfig")
    meshctl("waypoint", "apply", "-n", "default", "--wait", "--kubeconfig", kubeconfig)
    service = "/api/v1/namespaces/default/services/web-api"
    labels = {"istio.io/use-waypoint": "waypoint", "istio.io/ingress-use-waypoint": "true"}
    get_only = {
        "targetRefs": [{"group": "", "kind": "Service", "name": "web-api"}],
        "action": "ALLOW",
        "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}],
    }
    url = edge.apply(
        f"{ops.SECURITY}/default/authorizationpolicies",
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "get-only"},
            "spec": get_only,
        },
    )
    try:
        edge.client.patch(
            service, json={"metadata": {"labels": labels}}, headers={"Content-Type": "application/merge-patch+json"}
        ).raise_for_status()
        ops.wait(lambda: edge.curl("/", "-X", "DELETE")[0] == 403, 30, "the waypoint's GET-only policy at ingress")
        _, body = edge.curl("/", "-X", "DELETE")
        assert body == "RBAC: access denied"
        assert edge.curl("/")[0] == 200
    finally:
        edge.client.patch(
            service,
            json={"metadata": {"labels": {k: None for k in labels}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        edge.client.delete(url)
        meshctl("waypoint", "delete", "-n", "default", "waypoint", "--kubeconfig", kubeconfig)


def test_the_gateway_status_shows_addresses_listeners_and_routes(edge: Edge) -> None:
    kubeconfig = str(edge.state / "kubeconfig")
    shown = meshctl("gateway", "status", "edge", "-n", "default", "--kubeconfig", kubeconfig).stdout
    assert f"addresses: {edge.address}" in shown
    assert next(line for line in shown.splitlines() if line.startswith("https")).split()[4] == "1"  # ROUTES
    status = edge.client.get(f"{GATEWAYS}/edge").json()["status"]
    assert status["addresses"][0]["value"] == edge.address
    listener = status["listeners"][0]
    assert listener["attachedRoutes"] == 1
    assert {c["type"]: c["status"] for c in listener["conditions"]} == {
        "Accepted": "True",
        "Programmed": "True",
        "ResolvedRefs": "True",
    }
