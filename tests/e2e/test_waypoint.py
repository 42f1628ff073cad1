"""Waypoints end to end, as root, on a real 2-node netns cluster made by `meshctl cluster up`.

One cluster for the module. Namespace `default` is ambient and uses the waypoint `waypoint`
(made by `meshctl waypoint apply --enroll-namespace --wait`): `sleep` and `other` on node-1,
`web-api-v1` on node-2 and `web-api-v2` on node-1 (both app=web-api, service account web-api),
Services `web-api` (both), `web-api-v1` and `web-api-v2`. Every request is made from inside a
pod, as the application would; the waypoint is the only L7 hop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mesh import netns
from tests import harness
from tests.e2e import meshops as ops
from tests.e2e.test_cluster import api, leftovers, meshctl, wait_running

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

PODS = {  # name: (node, service account, version)
    "sleep": ("node-1", "sleep", ""),
    "other": ("node-1", "other", ""),
    "web-api-v1": ("node-2", "web-api", "v1"),
    "web-api-v2": ("node-1", "web-api", "v2"),
}
GATEWAY_REF = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}
GRPC_APP = str(Path(__file__).with_name("grpc_app.py"))
GRPC_PORT = 9090
# Pods beyond the sample app's defaults: name -> (node, service account, labels, command)
EXTRA_PODS = {
    "flaky-good": (
        "node-2",
        "flaky",
        {"app": "flaky"},
        [sys.executable, ops.PODAPP, "--http", "8080", "--name", "good"],
    ),
    "flaky-bad": ("node-1", "flaky", {"app": "flaky"}, [sys.executable, ops.PODAPP, "--http", "8080", "--fail"]),
    "grpc-server": ("node-2", "grpc", {"app": "grpc"}, [sys.executable, GRPC_APP, "serve", str(GRPC_PORT), "g1"]),
}


@dataclass
class Mesh:
    state: Path
    client: httpx.Client
    pods: dict[str, dict]
    vips: dict[str, str]

    def call(self, source: str, method: str = "GET", path: str = "/", service: str = "web-api", **headers: str):
        return ops.request(self.pods[source], self.vips[service], 80, method, path, **headers)

    def waypoint_pod(self) -> dict:
        return self.client.get("/api/v1/namespaces/default/pods/waypoint-0").json()

    def waypoint_http(self, port: int, path: str) -> ops.Response:
        """GET on the waypoint pod's own admin/metrics port, from inside its namespace (the admin
        port, 15000, listens on the pod's loopback only)."""
        pod = self.waypoint_pod()
        with ops.HttpClient(pod, "127.0.0.1" if port == 15000 else pod["status"]["podIP"], port) as client:
            return client.request("GET", path)

    def waypoint_log(self) -> str:
        logs = list(self.state.rglob("default_waypoint-0_*.log"))
        return "\n".join(p.read_text(errors="replace") for p in logs)

    def apply(self, path: str, body: dict) -> str:
        """Create (or replace) an object; returns its URL for deletion."""
        name = body["metadata"]["name"]
        existing = self.client.get(f"{path}/{name}")
        if existing.status_code == 200:
            body["metadata"]["resourceVersion"] = existing.json()["metadata"]["resourceVersion"]
            self.client.put(f"{path}/{name}", json=body).raise_for_status()
        else:
            self.client.post(path, json=body).raise_for_status()
        return f"{path}/{name}"

    def delete(self, url: str) -> None:
        self.client.delete(url)


def _service(name: str, selector: dict[str, str], port: dict | None = None) -> dict:
    port = port or {"name": "http", "port": 80, "targetPort": ops.HTTP_PORT}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [port]},
    }


def _pod(name: str, node: str, sa: str, labels: dict[str, str], command: list[str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "serviceAccountName": sa, "containers": [{"name": "app", "command": command}]},
    }


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    harness.need("root", os.geteuid() == 0)
    harness.need("redis", harness.port_open("127.0.0.1", 6379))
    if netns.exists("mesh-underlay"):
        pytest.skip("a cluster is already up on this machine (meshctl cluster down first)")
    state = tmp_path_factory.mktemp("wcluster")
    try:
        meshctl("cluster", "up", "--nodes", "2", "--state-dir", str(state))
        with api(state) as client:
            for name, (node, sa, version) in PODS.items():
                app = "web-api" if version else name
                pod = ops.app_pod(name, node, sa, app, version=version)
                client.post("/api/v1/namespaces/default/pods", json=pod).raise_for_status()
            for name, (node, sa, labels, command) in EXTRA_PODS.items():
                pod = _pod(name, node, sa, labels, command)
                client.post("/api/v1/namespaces/default/pods", json=pod).raise_for_status()
            services = {
                "web-api": {"app": "web-api"},
                "web-api-v1": {"app": "web-api", "version": "v1"},
                "web-api-v2": {"app": "web-api", "version": "v2"},
                "flaky": {"app": "flaky"},
            }
            for name, selector in services.items():
                client.post("/api/v1/namespaces/default/services", json=_service(name, selector)).raise_for_status()
            grpc_port = {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT, "appProtocol": "grpc"}
            client.post("/api/v1/namespaces/default/services", json=_service("grpc", {"app": "grpc"}, grpc_port))
            services["grpc"] = {}
            pods = {name: wait_running(client, "default", name) for name in [*PODS, *EXTRA_PODS]}
            vips = {n: client.get(f"/api/v1/namespaces/default/services/{n}").json() for n in services}
            vips = {n: service["spec"]["clusterIP"] for n, service in vips.items()}
            client.patch(
                "/api/v1/namespaces/default",
                json={"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}},
                headers={"Content-Type": "application/merge-patch+json"},
            ).raise_for_status()
            kubeconfig = str(state / "kubeconfig")
            out = meshctl(
                "waypoint", "apply", "-n", "default", "--enroll-namespace", "--wait", "--kubeconfig", kubeconfig
            ).stdout
            assert "waypoint default/waypoint applied" in out
            mesh = Mesh(state, client, pods, vips)
            # The L7 hop is in place once a DELETE carries the waypoint's own request id header.
            ops.wait(lambda: _via_waypoint(mesh), 30, "sleep to reach web-api through the waypoint")
            yield mesh
    finally:
        meshctl("cluster", "down", "--state-dir", str(state), check=False)
    assert leftovers() == {"netns": [], "etc_netns": [], "links": [], "routes": []}
    assert not subprocess.run(["pgrep", "-f", str(state)], capture_output=True).stdout, "processes left behind"


def _via_waypoint(mesh: Mesh) -> bool:
    answer = mesh.call("sleep")
    return answer is not None and answer.status == 200 and "x-request-id" in answer.json()["headers"]


def _policy(mesh: Mesh, name: str, spec: dict) -> str:
    body = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": name}}
    return mesh.apply(f"{ops.SECURITY}/default/authorizationpolicies", {**body, "spec": spec})


def _route(mesh: Mesh, kind: str, name: str, spec: dict) -> str:
    if kind == "HTTPRoute":
        path = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes"
        body = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": kind, "metadata": {"name": name}}
    else:
        plural = {"VirtualService": "virtualservices", "DestinationRule": "destinationrules"}[kind]
        path = f"/apis/networking.istio.io/v1/namespaces/default/{plural}"
        body = {"apiVersion": "networking.istio.io/v1", "kind": kind, "metadata": {"name": name}}
    return mesh.apply(path, {**body, "spec": spec})


def _status(mesh: Mesh, source: str, method: str = "GET", path: str = "/", **headers: str) -> int | None:
    answer = mesh.call(source, method, path, **headers)
    return None if answer is None else answer.status


def test_waypoint_is_programmed_and_listed(mesh: Mesh) -> None:
    gateway = mesh.client.get("/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways/waypoint").json()
    conditions = {c["type"]: c["status"] for c in gateway["status"]["conditions"]}
    assert conditions == {"Accepted": "True", "Programmed": "True"}
    service = mesh.client.get("/api/v1/namespaces/default/services/waypoint").json()
    assert gateway["status"]["addresses"][0]["value"] == service["spec"]["clusterIP"]
    listed = meshctl("waypoint", "list", "-n", "default", "--kubeconfig", str(mesh.state / "kubeconfig")).stdout
    assert "waypoint" in listed and "True" in listed


def test_get_only_policy_for_sleep_allows_get_and_denies_delete(mesh: Mesh) -> None:
    spec = {
        "targetRefs": [GATEWAY_REF],
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}],
                "to": [{"operation": {"methods": ["GET"]}}],
            }
        ],
    }
    url = _policy(mesh, "sleep-get-only", spec)
    try:
        ops.wait(lambda: _status(mesh, "sleep", "DELETE") == 403, 20, "DELETE to be denied")
        denied = mesh.call("sleep", "DELETE")
        assert denied is not None and denied.body == b"RBAC: access denied"
        assert _status(mesh, "sleep", "GET") == 200
        assert _status(mesh, "other", "GET") == 403
        metrics = mesh.waypoint_http(15020, "/stats/prometheus").body.decode()
        assert ops.metric_sum(metrics, "istio_requests_total", response_code="403", reporter="waypoint") >= 2
        assert (
            ops.metric_sum(
                metrics,
                "istio_requests_total",
                response_code="200",
                source_principal="spiffe://cluster.local/ns/default/sa/sleep",
            )
            >= 1
        )
        ops.wait(lambda: "RBAC: access denied" in mesh.waypoint_log(), 5, "the access-log line of the denial")
    finally:
        mesh.delete(url)
    ops.wait(lambda: _status(mesh, "other", "DELETE") == 200, 20, "the policy to go away")


def test_canary_90_10_between_v1_and_v2(mesh: Mesh) -> None:
    spec = {
        "parentRefs": [{"group": "", "kind": "Service", "name": "web-api", "port": 80}],
        "rules": [
            {
                "backendRefs": [
                    {"name": "web-api-v1", "port": 80, "weight": 90},
                    {"name": "web-api-v2", "port": 80, "weight": 10},
                ]
            }
        ],
    }
    url = _route(mesh, "HTTPRoute", "canary", spec)
    try:

        def split() -> Counter:
            with ops.HttpClient(mesh.pods["sleep"], mesh.vips["web-api"], 80) as client:
                return Counter(client.request("GET", "/").json()["name"] for _ in range(200))

        ops.wait(lambda: 150 <= split()["v1"] <= 195, 20, "the 90/10 split to apply")
        with ops.HttpClient(mesh.pods["sleep"], mesh.vips["web-api"], 80) as client:
            counts = Counter(client.request("GET", "/").json()["name"] for _ in range(1000))
        assert 850 <= counts["v1"] <= 950, counts
        assert counts["v1"] + counts["v2"] == 1000
    finally:
        mesh.delete(url)


def test_header_based_route(mesh: Mesh) -> None:
    spec = {
        "parentRefs": [{"group": "", "kind": "Service", "name": "web-api", "port": 80}],
        "rules": [
            {
                "matches": [{"headers": [{"name": "x-version", "value": "v2"}]}],
                "backendRefs": [{"name": "web-api-v2", "port": 80}],
            },
            {"backendRefs": [{"name": "web-api-v1", "port": 80}]},
        ],
    }
    url = _route(mesh, "HTTPRoute", "by-header", spec)
    try:

        def routed() -> bool:
            with ops.HttpClient(mesh.pods["sleep"], mesh.vips["web-api"], 80) as client:
                v2 = {client.request("GET", "/", {"x-version": "v2"}).json()["name"] for _ in range(20)}
                v1 = {client.request("GET", "/").json()["name"] for _ in range(20)}
            return v2 == {"v2"} and v1 == {"v1"}

        ops.wait(routed, 20, "x-version: v2 to reach v2 only and the rest v1 only")
    finally:
        mesh.delete(url)


def test_retries_hide_a_backend_failing_half_the_time(mesh: Mesh) -> None:
    spec = {
        "hosts": ["web-api-v1"],
        "http": [
            {
                "route": [{"destination": {"host": "web-api-v1"}}],
                "retries": {"attempts": 3, "retryOn": "5xx"},
            }
        ],
    }
    url = _route(mesh, "VirtualService", "retry-v1", spec)
    try:

        def success_rate() -> float:
            with ops.HttpClient(mesh.pods["sleep"], mesh.vips["web-api-v1"], 80) as client:
                return sum(client.request("GET", "/flaky").status == 200 for _ in range(100)) / 100

        ops.wait(lambda: success_rate() >= 0.99, 20, "retries to hide the failures")
    finally:
        mesh.delete(url)


def test_timeout_answers_504_in_time(mesh: Mesh) -> None:
    spec = {"hosts": ["web-api-v1"], "http": [{"route": [{"destination": {"host": "web-api-v1"}}], "timeout": "0.5s"}]}
    url = _route(mesh, "VirtualService", "timeout-v1", spec)
    try:

        def timed() -> float | None:
            started = time.monotonic()
            status = _status(mesh, "sleep", "GET", "/delay/3000", service="web-api-v1")
            elapsed = time.monotonic() - started
            return elapsed if status == 504 else None

        elapsed = ops.wait(timed, 20, "the route timeout to answer 504")
        assert 0.5 <= elapsed <= 0.5 + 0.1 + 0.2  # timeout + 100 ms, plus the pod-exec client's own overhead
    finally:
        mesh.delete(url)


def test_fault_abort_and_delay_by_percentage(mesh: Mesh) -> None:
    spec = {
        "hosts": ["web-api-v2"],
        "http": [
            {
                "route": [{"destination": {"host": "web-api-v2"}}],
                "fault": {
                    "abort": {"httpStatus": 418, "percentage": {"value": 50}},
                    "delay": {"fixedDelay": "0.2s", "percentage": {"value": 100}},
                },
            }
        ],
    }
    url = _route(mesh, "VirtualService", "fault-v2", spec)
    try:
        ops.wait(lambda: _status(mesh, "sleep", service="web-api-v2") == 418, 20, "the fault to apply")
        started = time.monotonic()
        with ops.HttpClient(mesh.pods["sleep"], mesh.vips["web-api-v2"], 80) as client:
            statuses = Counter(client.request("GET", "/").status for _ in range(40))
        assert time.monotonic() - started >= 40 * 0.2
        assert set(statuses) == {200, 418} and 8 <= statuses[418] <= 32, statuses
    finally:
        mesh.delete(url)


def test_service_opted_out_with_use_waypoint_none_skips_the_waypoint(mesh: Mesh) -> None:
    spec = {"targetRefs": [GATEWAY_REF], "action": "ALLOW", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}
    url = _policy(mesh, "get-only", spec)
    service = "/api/v1/namespaces/default/services/web-api-v2"
    try:
        ops.wait(lambda: _status(mesh, "sleep", "DELETE", service="web-api-v2") == 403, 20, "DELETE to be denied")
        mesh.client.patch(
            service,
            json={"metadata": {"labels": {"istio.io/use-waypoint": "none"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
        skipped = lambda: _status(mesh, "sleep", "DELETE", service="web-api-v2") == 200  # noqa: E731
        ops.wait(skipped, 20, "the waypoint to be skipped")
        answer = mesh.call("sleep", service="web-api-v2")
        assert answer is not None and "x-request-id" not in answer.json()["headers"]
    finally:
        mesh.client.patch(
            service,
            json={"metadata": {"labels": {"istio.io/use-waypoint": None}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        mesh.delete(url)


def test_waypoint_config_dump_lists_the_bound_services(mesh: Mesh) -> None:
    dump = json.loads(mesh.waypoint_http(15000, "/config_dump").body)
    text = json.dumps(dump)
    assert "web-api.default.svc.cluster.local" in text


def test_no_other_pod_reaches_the_waypoints_admin_port(mesh: Mesh) -> None:
    """/config_dump and POST /quitquitquit answer on the waypoint pod's loopback only (as Envoy's
    admin does); its metrics port stays open to scrapers."""
    waypoint_ip = mesh.waypoint_pod()["status"]["podIP"]
    assert ops.http_get(mesh.pods["sleep"], waypoint_ip, 15000, "/config_dump") is None
    assert b"istio_requests_total" in mesh.waypoint_http(15020, "/stats/prometheus").body
    assert json.loads(mesh.waypoint_http(15000, "/config_dump").body)  # from inside its namespace


def _jwt_fixtures() -> tuple[str, callable]:
    """An inline JWKS and a function signing tokens with its key (ES256)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{**jwk, "kid": "e2e", "alg": "ES256", "use": "sig"}]})

    def sign(claims: dict, signing_key=key) -> str:
        now = int(time.time())
        body = {"iss": "https://issuer.e2e.test", "sub": "alice", "iat": now, "exp": now + 600, **claims}
        return jwt.encode(body, signing_key, algorithm="ES256", headers={"kid": "e2e"})

    return jwks, sign


def _jwks_server(mesh: Mesh, jwks: str) -> str:
    """A pod serving the JWKS document (python's http.server in a directory holding it) behind
    the Service `jwks`; returns the in-mesh URI a RequestAuthentication names."""
    folder = mesh.state / "jwks-site"
    folder.mkdir(exist_ok=True)
    (folder / "jwks.json").write_text(jwks)
    body = _pod("jwks", "node-2", "jwks", {"app": "jwks"}, [sys.executable, "-m", "http.server", "8000"])
    body["spec"]["containers"][0]["workingDir"] = str(folder)
    mesh.apply("/api/v1/namespaces/default/pods", body)
    port = {"name": "http", "port": 80, "targetPort": 8000}
    mesh.apply("/api/v1/namespaces/default/services", _service("jwks", {"app": "jwks"}, port))
    wait_running(mesh.client, "default", "jwks")
    return "http://jwks.default.svc.cluster.local/jwks.json"


def test_jwt_claims_decide_at_the_waypoint(mesh: Mesh) -> None:
    """The keys come by `jwksUri` from a server inside the mesh (mesh-xds fetches and inlines them)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    jwks, sign = _jwt_fixtures()
    rule = {"issuer": "https://issuer.e2e.test", "jwksUri": _jwks_server(mesh, jwks)}
    authn = {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "issuer"},
        "spec": {"targetRefs": [GATEWAY_REF], "jwtRules": [rule]},
    }
    authn_url = mesh.apply(f"{ops.SECURITY}/default/requestauthentications", authn)
    spec = {
        "targetRefs": [GATEWAY_REF],
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"requestPrincipals": ["*"]}}],
                "when": [{"key": "request.auth.claims[groups]", "values": ["admin"]}],
            }
        ],
    }
    policy_url = _policy(mesh, "admins-only", spec)
    admin, dev = sign({"groups": ["admin"]}), sign({"groups": ["dev"]})
    forged = sign({"groups": ["admin"]}, ec.generate_private_key(ec.SECP256R1()))
    try:
        ops.wait(lambda: _status(mesh, "sleep") == 403, 20, "the claim requirement to apply")
        ops.wait(
            lambda: _status(mesh, "sleep", authorization=f"Bearer {admin}") == 200, 30, "the keys fetched from the mesh"
        )
        assert _status(mesh, "sleep", authorization=f"Bearer {dev}") == 403
        assert _status(mesh, "sleep", authorization=f"Bearer {forged}") == 401
    finally:
        mesh.delete(policy_url)
        mesh.delete(authn_url)
    ops.wait(lambda: _status(mesh, "sleep") == 200, 20, "the requirement to go away")


def _seen(mesh: Mesh, pod: str) -> int:
    answer = ops.request(mesh.pods["sleep"], mesh.pods[pod]["status"]["podIP"], ops.HTTP_PORT, "GET", "/stats")
    assert answer is not None and answer.status == 200
    return answer.json()["seen"]


def test_mirroring_copies_requests_and_the_client_sees_only_the_primary(mesh: Mesh) -> None:
    spec = {
        "hosts": ["web-api-v1"],
        "http": [
            {
                "route": [{"destination": {"host": "web-api-v1"}}],
                "mirror": {"host": "web-api-v2"},
                "mirrorPercentage": {"value": 100.0},
            }
        ],
    }
    url = _route(mesh, "VirtualService", "mirror-v1", spec)
    try:

        def copied() -> bool:
            before = _seen(mesh, "web-api-v2")
            mesh.call("sleep", service="web-api-v1")
            time.sleep(0.2)
            return _seen(mesh, "web-api-v2") > before

        ops.wait(copied, 20, "the mirror to receive a copy")
        start = _seen(mesh, "web-api-v2")
        with ops.HttpClient(mesh.pods["sleep"], mesh.vips["web-api-v1"], 80) as client:
            names = {client.request("GET", "/").json()["name"] for _ in range(20)}
        assert names == {"v1"}
        ops.wait(lambda: _seen(mesh, "web-api-v2") >= start + 20, 10, "20 copies at the mirror")
    finally:
        mesh.delete(url)


def test_circuit_breaker_answers_overflow_with_503(mesh: Mesh) -> None:
    spec = {
        "host": "web-api-v1",
        "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}},
    }
    url = _route(mesh, "DestinationRule", "one-connection", spec)
    try:

        def burst() -> Counter:
            statuses: list[int | None] = []
            threads = [
                threading.Thread(
                    target=lambda: statuses.append(_status(mesh, "sleep", "GET", "/delay/400", service="web-api-v1"))
                )
                for _ in range(10)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(15)
            return Counter(statuses)

        counts = ops.wait(lambda: (c := burst())[503] and c, 30, "the breaker to overflow")
        assert counts[200] >= 1, counts
        metrics = mesh.waypoint_http(15020, "/stats/prometheus").body.decode()
        assert ops.metric_sum(metrics, "istio_requests_total", response_code="503", response_flags="UO") >= 1
    finally:
        mesh.delete(url)


def test_outlier_detection_ejects_the_failing_endpoint(mesh: Mesh) -> None:
    spec = {
        "host": "flaky",
        "trafficPolicy": {
            "outlierDetection": {
                "consecutive5xxErrors": 2,
                "interval": "1s",
                "baseEjectionTime": "60s",
                "maxEjectionPercent": 100,
            }
        },
    }
    url = _route(mesh, "DestinationRule", "eject-flaky", spec)
    try:
        time.sleep(1)  # the rule reaches the waypoint
        with ops.HttpClient(mesh.pods["sleep"], mesh.vips["flaky"], 80) as client:
            for _ in range(20):
                client.request("GET", "/")
        ops.wait(
            lambda: "ejected" in json.dumps(json.loads(mesh.waypoint_http(15000, "/config_dump").body)),
            10,
            "the bad endpoint to be ejected",
        )
        bad_before = _seen(mesh, "flaky-bad")
        with ops.HttpClient(mesh.pods["sleep"], mesh.vips["flaky"], 80) as client:
            statuses = Counter(client.request("GET", "/").status for _ in range(30))
        assert statuses == {200: 30}
        assert _seen(mesh, "flaky-bad") == bad_before  # ejected: it got none of them
    finally:
        mesh.delete(url)


def _grpc_call(mesh: Mesh, method: str, count: int = 3) -> list[str]:
    netns_name = ops.pod_netns(mesh.pods["sleep"])
    target = f"{mesh.vips['grpc']}:{GRPC_PORT}"
    out = subprocess.run(
        ["ip", "netns", "exec", netns_name, sys.executable, GRPC_APP, "call", target, method, "hi", str(count)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.split("\n")[:-1]


def test_grpc_through_the_waypoint(mesh: Mesh) -> None:
    ops.wait(lambda: _grpc_call(mesh, "Say") == ["OK g1:hi"] * 3, 20, "gRPC calls through the waypoint")
    assert _grpc_call(mesh, "Fail", 1) == ["NOT_FOUND"]
    spec = {
        "targetRefs": [GATEWAY_REF],
        "action": "DENY",
        "rules": [{"to": [{"operation": {"paths": ["/mesh.Echo/Say"]}}]}],
    }
    url = _policy(mesh, "no-say", spec)
    try:
        ops.wait(lambda: _grpc_call(mesh, "Say", 1) == ["PERMISSION_DENIED"], 20, "the gRPC method to be denied")
        metrics = mesh.waypoint_http(15020, "/stats/prometheus").body.decode()
        assert ops.metric_sum(metrics, "istio_requests_total", request_protocol="grpc") >= 4
    finally:
        mesh.delete(url)


def test_a_service_waypoint_beside_the_namespace_waypoint(mesh: Mesh) -> None:
    kubeconfig = str(mesh.state / "kubeconfig")
    meshctl("waypoint", "apply", "-n", "default", "--name", "svc-waypoint", "--wait", "--kubeconfig", kubeconfig)
    service = "/api/v1/namespaces/default/services/web-api-v2"
    ref = {**GATEWAY_REF, "name": "svc-waypoint"}
    url = _policy(
        mesh,
        "svc-no-delete",
        {"targetRefs": [ref], "action": "DENY", "rules": [{"to": [{"operation": {"methods": ["DELETE"]}}]}]},
    )
    try:
        mesh.client.patch(
            service,
            json={"metadata": {"labels": {"istio.io/use-waypoint": "svc-waypoint"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
        ops.wait(lambda: _status(mesh, "sleep", "DELETE", service="web-api-v2") == 403, 30, "the service waypoint")
        assert _status(mesh, "sleep", "DELETE", service="web-api-v1") == 200  # still the namespace waypoint
    finally:
        mesh.client.patch(
            service,
            json={"metadata": {"labels": {"istio.io/use-waypoint": None}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        mesh.delete(url)
        meshctl("waypoint", "delete", "-n", "default", "svc-waypoint", "--kubeconfig", kubeconfig)


def _label(mesh: Mesh, url: str, labels: dict[str, str | None]) -> None:
    mesh.client.patch(
        url, json={"metadata": {"labels": labels}}, headers={"Content-Type": "application/merge-patch+json"}
    ).raise_for_status()


def test_workload_waypoint_applies_to_traffic_addressed_to_the_pod(mesh: Mesh) -> None:
    kubeconfig = str(mesh.state / "kubeconfig")
    meshctl(
        "waypoint",
        "apply",
        "-n",
        "default",
        "--name",
        "wl-waypoint",
        "--for",
        "workload",
        "--wait",
        "--kubeconfig",
        kubeconfig,
    )
    pod_url = "/api/v1/namespaces/default/pods/web-api-v2"
    ref = {**GATEWAY_REF, "name": "wl-waypoint"}
    deny = {"targetRefs": [ref], "action": "DENY", "rules": [{"to": [{"operation": {"methods": ["DELETE"]}}]}]}
    url = _policy(mesh, "wl-no-delete", deny)
    v1_ip, v2_ip = (mesh.pods[p]["status"]["podIP"] for p in ("web-api-v1", "web-api-v2"))

    def direct(ip: str, method: str) -> int | None:
        answer = ops.request(mesh.pods["sleep"], ip, ops.HTTP_PORT, method, "/")
        return None if answer is None else answer.status

    try:
        _label(mesh, pod_url, {"istio.io/use-waypoint": "wl-waypoint"})
        ops.wait(lambda: direct(v2_ip, "DELETE") == 403, 30, "the workload waypoint to deny DELETE to the pod")
        assert direct(v2_ip, "GET") == 200
        assert direct(v1_ip, "DELETE") == 200  # another pod: not bound, L4 only
    finally:
        _label(mesh, pod_url, {"istio.io/use-waypoint": None})
        mesh.delete(url)
        meshctl("waypoint", "delete", "-n", "default", "wl-waypoint", "--kubeconfig", kubeconfig)


def test_egress_waypoint_decides_which_identities_go_out(mesh: Mesh) -> None:
    kubeconfig = str(mesh.state / "kubeconfig")
    mesh.client.post(
        "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "outside"}}
    )
    server = _pod(
        "external",
        "node-2",
        "external",
        {"app": "external"},
        [sys.executable, ops.PODAPP, "--http", "8080", "--name", "external"],
    )
    mesh.client.post(
        "/api/v1/namespaces/outside/pods", json={**server, "metadata": {**server["metadata"], "namespace": "outside"}}
    )
    external_ip = wait_running(mesh.client, "outside", "external")["status"]["podIP"]
    meshctl("waypoint", "apply", "-n", "default", "--name", "egress-waypoint", "--wait", "--kubeconfig", kubeconfig)
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "external", "labels": {"istio.io/use-waypoint": "egress-waypoint"}},
        "spec": {
            "hosts": ["external.example"],
            "addresses": ["198.19.200.10"],
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 8080}],
            "resolution": "STATIC",
            "location": "MESH_EXTERNAL",
            "endpoints": [{"address": external_ip}],
        },
    }
    entry_url = mesh.apply("/apis/networking.istio.io/v1/namespaces/default/serviceentries", entry)
    allow = {
        "targetRefs": [{**GATEWAY_REF, "name": "egress-waypoint"}],
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}],
    }
    url = _policy(mesh, "egress-sleep-only", allow)

    def out(source: str) -> ops.Response | None:
        return ops.request(mesh.pods[source], "198.19.200.10", 80, "GET", "/")

    try:
        ops.wait(
            lambda: (r := out("sleep")) is not None and r.status == 200 and r.json()["name"] == "external",
            30,
            "sleep to reach the external server through the egress waypoint",
        )
        denied = out("other")
        assert denied is not None and denied.status == 403
    finally:
        mesh.delete(url)
        mesh.delete(entry_url)
        meshctl("waypoint", "delete", "-n", "default", "egress-waypoint", "--kubeconfig", kubeconfig)
        mesh.client.delete("/api/v1/namespaces/outside/pods/external")
