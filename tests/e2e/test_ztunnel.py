"""ztunnel end to end, as root, on a real 2-node netns cluster made by `meshctl cluster up`.

One cluster for the module. In namespace `default` (labelled ambient): `sleep` and `other` on
node-1, `web-api` on node-2 and `web-api-local` on node-1 (service account web-api, behind the
Service `web-api`), `lonely` on node-2; in `outside` (not in the mesh) `outsider` on node-1.
node-2's ztunnel requests 60 s certificates (mesh-ca runs with --min-cert-ttl 60), so its
certificates rotate every ~30 s under a long-lived echo stream that runs from the fixture to the
rotation test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from mesh import netns
from tests import harness
from tests.e2e import meshops as ops
from tests.e2e.test_cluster import api, leftovers, meshctl, wait_running

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

NODE_IP = {"node-1": "198.19.255.11", "node-2": "198.19.255.12"}
SLEEP_ID = "spiffe://cluster.local/ns/default/sa/sleep"
WEB_ID = "spiffe://cluster.local/ns/default/sa/web-api"
PODS = {  # name: (node, service account, app label, namespace)
    "sleep": ("node-1", "sleep", "sleep", "default"),
    "other": ("node-1", "other", "other", "default"),
    "web-api": ("node-2", "web-api", "web-api", "default"),
    "web-api-local": ("node-1", "web-api", "web-api", "default"),
    "lonely": ("node-2", "lonely", "lonely", "default"),
    "outsider": ("node-1", "outsider", "outsider", "outside"),
}


@dataclass
class Mesh:
    state: Path
    client: httpx.Client
    pods: dict[str, dict]
    vip: str
    stream: ops.EchoStream
    first_web_serial: str

    def ip(self, name: str) -> str:
        return self.pods[name]["status"]["podIP"]

    def get(self, source: str, target: str, port: int = ops.HTTP_PORT, path: str = "/") -> dict | None:
        address = self.vip if target == "vip" else self.ip(target)
        return ops.http_get(self.pods[source], address, 80 if target == "vip" else port, path)

    def processes(self) -> dict[str, int]:
        raw = json.loads((self.state / "cluster.json").read_text())
        return {p["name"]: p["pid"] for p in raw["processes"]}


def _stop_pid(pid: int, sig: int = signal.SIGTERM) -> None:
    os.kill(pid, sig)
    ops.wait(lambda: not _running(pid), 15, f"pid {pid} to exit")


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and b"zombie" not in _status(pid)


def _status(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/status").read_bytes().lower()
    except OSError:
        return b"zombie"


def _up(state: Path, **env: str) -> None:
    subprocess.run(
        [str(harness.VENV_BIN / "meshctl"), "cluster", "up", "--nodes", "2", "--state-dir", str(state)],
        check=True,
        capture_output=True,
        timeout=180,
        env={**os.environ, **env},
    )


def _ready(node: str) -> bool:
    try:
        return ops.admin(NODE_IP[node], "/healthz/ready", 15021).status_code == 200
    except httpx.HTTPError:
        return False


def _serial(node: str, identity: str) -> str | None:
    for cert in ops.config_dump(NODE_IP[node])["certificates"]:
        if cert["identity"] == identity and cert["certChain"]:
            return cert["certChain"][0]["serialNumber"]
    return None


def _create_pods(client: httpx.Client) -> dict[str, dict]:
    client.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "outside"}})
    for name, (node, sa, app, ns) in PODS.items():
        client.post(f"/api/v1/namespaces/{ns}/pods", json=ops.app_pod(name, node, sa, app, ns)).raise_for_status()
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web-api"},
        "spec": {"selector": {"app": "web-api"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    client.post("/api/v1/namespaces/default/services", json=service).raise_for_status()
    return {name: wait_running(client, ns, name) for name, (_, _, _, ns) in PODS.items()}


def _enroll_default(client: httpx.Client) -> None:
    client.patch(
        "/api/v1/namespaces/default",
        json={"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    ).raise_for_status()

    def hbone_everywhere() -> bool:
        for node in NODE_IP:
            workloads = {
                w["name"]: w for w in ops.config_dump(NODE_IP[node])["workloads"] if w["namespace"] == "default"
            }
            if len(workloads) < 5 or any(w["protocol"] != "HBONE" for w in workloads.values()):
                return False
        return True

    ops.wait(hbone_everywhere, 20, "both ztunnels to see the default pods on HBONE")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    harness.need("root", os.geteuid() == 0)
    harness.need("redis", harness.port_open("127.0.0.1", 6379))
    if netns.exists("mesh-underlay"):
        pytest.skip("a cluster is already up on this machine (meshctl cluster down first)")
    state = tmp_path_factory.mktemp("zcluster")
    stream = None
    try:
        meshctl("cluster", "up", "--nodes", "2", "--state-dir", str(state))
        pid = json.loads((state / "cluster.json").read_text())
        _stop_pid(next(p["pid"] for p in pid["processes"] if p["name"] == "node-2/ztunnel"))
        _up(state, MESH_CERT_TTL="60")  # node-2's ztunnel now asks for 60 s certificates
        ops.wait(lambda: _ready("node-1") and _ready("node-2"), 30, "both ztunnels ready")
        with api(state) as client:
            pods = _create_pods(client)
            vip = client.get("/api/v1/namespaces/default/services/web-api").json()["spec"]["clusterIP"]
            _enroll_default(client)
            mesh = Mesh(state, client, pods, vip, None, "")  # type: ignore[arg-type]
            ops.wait(lambda: mesh.get("sleep", "web-api"), 20, "sleep to reach web-api")
            sock = ops.connect(pods["sleep"], mesh.ip("web-api"), ops.ECHO_PORT)
            stream = mesh.stream = ops.EchoStream(sock).start()
            mesh.first_web_serial = ops.wait(lambda: _serial("node-2", WEB_ID), 10, "web-api's certificate")
            yield mesh
    finally:
        if stream is not None:
            stream.stop()
        meshctl("cluster", "down", "--state-dir", str(state), check=False)
    assert leftovers() == {"netns": [], "etc_netns": [], "links": [], "routes": []}
    assert not subprocess.run(["pgrep", "-f", str(state)], capture_output=True).stdout, "processes left behind"


def _policy(mesh: Mesh, name: str, spec: dict, kind: str = "authorizationpolicies", ns: str = "default") -> str:
    body = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy" if kind == "authorizationpolicies" else "PeerAuthentication",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    mesh.client.post(f"{ops.SECURITY}/{ns}/{kind}", json=body).raise_for_status()
    return f"{ops.SECURITY}/{ns}/{kind}/{name}"


def _delete(mesh: Mesh, *paths: str) -> None:
    for path in paths:
        mesh.client.delete(path)


# --- the seed journey ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["web-api", "web-api-local", "vip"])
def test_sleep_reaches_web_api_across_nodes_on_the_same_node_and_by_service(mesh: Mesh, target: str) -> None:
    answer = mesh.get("sleep", target)
    assert answer is not None
    assert answer["client"].split(":")[0] == mesh.ip("sleep")  # ztunnel kept the client's address


@pytest.mark.parametrize(
    ("target", "node", "netns_name"), [("web-api", "node-2", "mesh-node-2"), ("web-api-local", "node-1", "mesh-node-1")]
)
def test_the_hop_on_the_wire_is_tls_to_15008(mesh: Mesh, target: str, node: str, netns_name: str) -> None:
    marker = f"/wire-{uuid.uuid4().hex}"
    capture = ops.WireCapture(netns_name, None, mesh.ip("sleep"), mesh.ip(target))
    try:
        assert mesh.get("sleep", target, path=marker) is not None
        time.sleep(0.2)
    finally:
        segments = capture.stop()
    payloads = [s[4] for s in segments if s[4]]
    assert payloads, "no traffic captured between the two pods"
    assert all(15008 in (s[1], s[3]) for s in segments), {(s[1], s[3]) for s in segments}
    assert not any(marker.encode() in p for p in payloads), "the request crossed the wire in plaintext"
    assert any(p.startswith(b"\x17\x03\x03") for p in payloads), "no TLS application-data record seen"
    log = (mesh.state / "nodes" / node / "ztunnel.log").read_text().splitlines()
    inbound = [json.loads(line) for line in log if '"ztunnel.access"' in line and '"inbound"' in line]
    assert any(
        e["protocol"] == "HBONE" and e["src.identity"] == SLEEP_ID and e["dst.addr"] == f"{mesh.ip(target)}:8080"
        for e in inbound
    ), "the server's ztunnel did not log an inbound HBONE connection from sleep"


def test_ztunnel_config_certificates_shows_sleep_identity(mesh: Mesh) -> None:
    text = meshctl("ztunnel-config", "certificates", "--node", "node-1", "--state-dir", str(mesh.state)).stdout
    assert any(line.startswith(SLEEP_ID) and "Leaf" in line and "Available" in line for line in text.splitlines())
    dump = json.loads(
        meshctl(
            "ztunnel-config", "certificates", "--node", "node-1", "-o", "json", "--state-dir", str(mesh.state)
        ).stdout
    )
    entry = next(c for c in dump if c["identity"] == SLEEP_ID)
    leaf = x509.load_pem_x509_certificate(entry["certChain"][0]["pem"].encode())
    assert leaf.issuer.rfc4514_string() == "O=cluster.local"
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey) and leaf.public_key().curve.name == "secp256r1"
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert abs(lifetime.total_seconds() - 24 * 3600) <= 120  # 24 h (the CA backdates not_before by a minute)
    for what in ("workloads", "services", "policies", "connections", "all"):
        meshctl("ztunnel-config", what, "--node", "node-1", "--state-dir", str(mesh.state))
    outside = meshctl("ztunnel-config", "workloads", "-n", "outside", "--state-dir", str(mesh.state)).stdout
    assert [line.split()[:2] for line in outside.splitlines()[1:]] == [["outside", "outsider"]]


def test_no_pod_can_read_or_stop_its_nodes_ztunnel(mesh: Mesh) -> None:
    """Every pod reaches its node's underlay IP; ztunnel's admin port (/config_dump, POST
    /quitquitquit) listens on the node's loopback only, where meshctl and these tests enter."""
    node_ip = NODE_IP["node-1"]
    for source in ("sleep", "outsider"):  # enrolled (through ztunnel's 15001) and not
        assert ops.http_get(mesh.pods[source], node_ip, 15000, "/config_dump") is None, source
        with contextlib.suppress(OSError), ops.connect(mesh.pods[source], node_ip, 15000) as sock:
            sock.sendall(b"POST /quitquitquit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            sock.recv(1024)
    assert ops.admin(node_ip, "/healthz/ready", 15021).status_code == 200  # still there, still ready
    assert {p["name"] for p in ops.config_dump(node_ip)["pods"]} >= {"sleep"}  # from inside node-1


def test_ztunnel_config_log_silences_and_restores_the_access_log(mesh: Mesh) -> None:
    log = mesh.state / "nodes" / "node-2" / "ztunnel.log"

    def access_lines() -> int:
        return log.read_text(errors="replace").count('"logger":"ztunnel.access"')

    def http_open_on_node_2() -> bool:
        connections = ops.config_dump(NODE_IP["node-2"])["connections"]
        return any(c["remoteTarget"].endswith(f":{ops.HTTP_PORT}") for c in connections)

    def zc_log(*flags: str) -> str:
        return meshctl("ztunnel-config", "log", "--node", "node-2", *flags, "--state-dir", str(mesh.state)).stdout

    assert zc_log() == "node-2: current log level is info\n"
    assert zc_log("--level", "access:off") == "node-2: current log level is info,access=off\n"
    before = access_lines()
    assert mesh.get("sleep", "web-api")  # its inbound line on node-2 is not written
    ops.wait(lambda: not http_open_on_node_2(), 10, "node-2 to close the request's connection")
    assert zc_log("--reset") == "node-2: current log level is info\n"
    assert mesh.get("sleep", "web-api")
    ops.wait(lambda: access_lines() > before, 10, "the access line of the request after the reset")
    time.sleep(0.5)
    assert access_lines() == before + 1  # only the second request's


def _resolve(mesh: Mesh, pod: str, name: str) -> subprocess.CompletedProcess[str]:
    """`getent hosts NAME` as the pod would run it (`ip netns exec` mounts the pod's resolv.conf)."""
    command = ["ip", "netns", "exec", ops.pod_netns(mesh.pods[pod]), "getent", "hosts", name]
    return subprocess.run(command, capture_output=True, text=True, timeout=20)


def test_pods_resolve_service_names_through_their_nodes_ztunnel(mesh: Mesh) -> None:
    # sleep (enrolled, node-1) by its namespace's search list; outsider (not enrolled) by NAME.NS.
    for pod, name in (("sleep", "web-api"), ("outsider", "web-api.default"), ("lonely", "web-api.default.svc")):
        answer = _resolve(mesh, pod, name)
        assert answer.returncode == 0 and answer.stdout.split()[0] == mesh.vip, (pod, name, answer)
    started = time.monotonic()
    assert _resolve(mesh, "sleep", "nothing.default.svc.cluster.local").returncode == 2  # NXDOMAIN: no such name
    assert time.monotonic() - started < 5  # answered, not timed out
    # The name leads where the VIP does: through the mesh to web-api.
    answer = ops.http_get(mesh.pods["sleep"], _resolve(mesh, "sleep", "web-api").stdout.split()[0], 80)
    assert answer is not None
    assert answer["server"].rsplit(":", 1)[0] in {mesh.ip("web-api"), mesh.ip("web-api-local")}


# --- L4 authorization ---------------------------------------------------------------------------


def test_allow_nothing_denies(mesh: Mesh) -> None:
    path = _policy(mesh, "allow-nothing", {})
    try:
        ops.wait(lambda: mesh.get("sleep", "web-api") is None, 15, "allow-nothing to deny sleep")
        assert mesh.get("sleep", "web-api-local") is None
    finally:
        _delete(mesh, path)
    ops.wait(lambda: mesh.get("sleep", "web-api"), 15, "traffic allowed again")


def test_allow_for_principal_sleep_lets_sleep_in_and_keeps_others_out(mesh: Mesh) -> None:
    allow = {
        "selector": {"matchLabels": {"app": "web-api"}},
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}],
    }
    path = _policy(mesh, "allow-sleep", allow)
    try:
        ops.wait(lambda: mesh.get("other", "web-api") is None, 15, "the ALLOW to keep `other` out")
        assert mesh.get("sleep", "web-api") is not None
        assert mesh.get("sleep", "vip") is not None
        deny = {
            "selector": {"matchLabels": {"app": "web-api"}},
            "action": "DENY",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}],
        }
        deny_path = _policy(mesh, "deny-sleep", deny)
        try:  # DENY beats ALLOW
            ops.wait(lambda: mesh.get("sleep", "web-api") is None, 15, "the DENY to beat the ALLOW")
        finally:
            _delete(mesh, deny_path)
    finally:
        _delete(mesh, path)
    ops.wait(lambda: mesh.get("other", "web-api"), 15, "traffic allowed again")


def test_allow_with_only_methods_denies_everything_and_says_why(mesh: Mesh) -> None:
    spec = {
        "selector": {"matchLabels": {"app": "web-api"}},
        "action": "ALLOW",
        "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}],
    }
    path = _policy(mesh, "allow-get", spec)
    try:
        ops.wait(lambda: mesh.get("sleep", "web-api") is None, 15, "an L7-only ALLOW to fail closed")
        assert mesh.get("other", "web-api-local") is None

        def condition() -> dict | None:
            conditions = (mesh.client.get(path).json().get("status") or {}).get("conditions") or []
            return next((c for c in conditions if c["type"] == "ZtunnelAccepted"), None)

        found = ops.wait(condition, 20, "the ZtunnelAccepted condition")
        assert found["reason"] == "UnsupportedValue"
        assert "methods" in found["message"] and "waypoint" in found["message"]
    finally:
        _delete(mesh, path)
    ops.wait(lambda: mesh.get("sleep", "web-api"), 15, "traffic allowed again")


def test_strict_refuses_plaintext_from_outside_the_mesh_and_permissive_lets_it_in(mesh: Mesh) -> None:
    assert mesh.get("outsider", "web-api") is not None  # no PeerAuthentication: PERMISSIVE
    path = _policy(mesh, "default", {"mtls": {"mode": "STRICT"}}, kind="peerauthentications")
    try:
        ops.wait(lambda: mesh.get("outsider", "web-api") is None, 15, "STRICT to refuse plaintext")
        assert mesh.get("sleep", "web-api") is not None  # mTLS from inside the mesh still works
        mesh.client.patch(
            path,
            json={"spec": {"mtls": {"mode": "PERMISSIVE"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
        answer = ops.wait(lambda: mesh.get("outsider", "web-api"), 15, "PERMISSIVE to let plaintext in")
        assert answer["client"].split(":")[0] == mesh.ip("outsider")
    finally:
        _delete(mesh, path)


# --- telemetry ----------------------------------------------------------------------------------


def test_tcp_connections_opened_rises_with_both_principals(mesh: Mesh) -> None:
    before = {node: ops.tcp_opened(NODE_IP[node], SLEEP_ID, WEB_ID) for node in NODE_IP}
    for _ in range(3):
        assert mesh.get("sleep", "web-api") is not None
    time.sleep(0.3)
    after = {node: ops.tcp_opened(NODE_IP[node], SLEEP_ID, WEB_ID) for node in NODE_IP}
    assert after["node-1"] >= before["node-1"] + 3  # reporter=source (sleep's ztunnel)
    assert after["node-2"] >= before["node-2"] + 3  # reporter=destination (web-api's ztunnel)
    text = ops.admin(NODE_IP["node-2"], "/metrics", 15020).text
    assert 'reporter="destination"' in text and 'connection_security_policy="mutual_tls"' in text


# --- identities ---------------------------------------------------------------------------------


def _request_certificate(node: str, state: Path, identity: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "nsenter",
            f"--net=/var/run/netns/mesh-{node}",
            "--",
            str(harness.VENV_BIN / "ztunnel"),
            "--state-dir",
            str(state / "nodes" / node),
            "--request-certificate",
            identity,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_node_1_cannot_obtain_a_certificate_for_a_service_account_only_on_node_2(mesh: Mesh) -> None:
    lonely = "spiffe://cluster.local/ns/default/sa/lonely"
    refused = _request_certificate("node-1", mesh.state, lonely)
    assert refused.returncode == 3 and "refused" in refused.stdout, refused.stdout + refused.stderr
    issued = _request_certificate("node-2", mesh.state, lonely)
    assert issued.returncode == 0 and "issued" in issued.stdout, issued.stdout + issued.stderr
    identities = {c["identity"] for c in ops.config_dump(NODE_IP["node-1"])["certificates"]}
    assert lonely not in identities and SLEEP_ID in identities


# --- resilience ---------------------------------------------------------------------------------


def test_kill_9_of_the_control_plane_keeps_traffic_flowing(mesh: Mesh) -> None:
    with ops.connect(mesh.pods["sleep"], mesh.ip("web-api"), ops.ECHO_PORT) as established:
        established.sendall(b"before\n")
        assert established.recv(100) == b"before\n"
        processes = mesh.processes()
        try:
            for name in ("istiod", "mesh-xds", "mesh-ca"):
                _stop_pid(processes[name], signal.SIGKILL)
            for _ in range(5):  # new connections, on both nodes, while the control plane is gone
                assert mesh.get("sleep", "web-api") is not None
                assert mesh.get("other", "web-api-local") is not None
                established.sendall(b"during\n")
                assert established.recv(100) == b"during\n"
                time.sleep(0.2)
        finally:
            _up(mesh.state)
        established.sendall(b"after\n")
        assert established.recv(100) == b"after\n"
    ops.wait(lambda: all(ops.config_dump(ip)["xds"]["connected"] for ip in NODE_IP.values()), 30, "xDS reconnects")
    assert mesh.get("sleep", "web-api") is not None


def test_certificates_rotate_under_a_long_lived_stream(mesh: Mesh) -> None:
    """node-2's 60 s certificates: at least one full lifetime under the fixture's echo stream."""
    remaining = 65 - (time.monotonic() - mesh.stream.started)
    if remaining > 0:
        time.sleep(remaining)
    current = ops.wait(
        lambda: (s := _serial("node-2", WEB_ID)) != mesh.first_web_serial and s, 40, "web-api's certificate to rotate"
    )
    served = ops.wait(
        lambda: (s := ops.tls_server_serial("mesh-node-2", mesh.ip("web-api"))) == _serial("node-2", WEB_ID) and s,
        10,
        "15008 to serve the current certificate",
    )
    assert served != mesh.first_web_serial and current
    assert mesh.stream.failures == [], mesh.stream.failures
    rounds = mesh.stream.rounds
    ops.wait(lambda: mesh.stream.rounds > rounds, 5, "the stream to keep flowing")
    assert mesh.get("sleep", "web-api") is not None


def test_sigterm_drains_open_connections_until_the_deadline_and_takes_no_new_ones(mesh: Mesh) -> None:
    """SIGTERM: the in-pod listeners close at once, so a new connection from sleep is refused (it
    does not slip past the mesh); the open ones keep flowing until the drain deadline (5 s by
    default), are cut then, and the process exits. A new ztunnel then takes over."""
    stream = ops.EchoStream(ops.connect(mesh.pods["sleep"], mesh.ip("web-api"), ops.ECHO_PORT)).start()
    pid = mesh.processes()["node-1/ztunnel"]
    try:
        ops.wait(lambda: stream.rounds >= 2, 5, "a new echo stream from sleep")
        os.kill(pid, signal.SIGTERM)
        signalled = time.monotonic()
        ops.wait(lambda: _refused(mesh, "sleep", "web-api"), 3, "new connections from sleep to be refused")
        rounds = stream.rounds
        time.sleep(2)
        assert _running(pid), "ztunnel exited before its drain deadline"
        assert stream.failures == [] and stream.rounds > rounds, "the open connection stopped during the drain"
        ops.wait(lambda: not _running(pid), 15, "ztunnel to exit after the drain")
        drained = time.monotonic() - signalled
        assert drained >= 4.5, f"ztunnel exited {drained:.1f}s after SIGTERM, before the 5 s deadline"
        ops.wait(lambda: stream.failures, 5, "the open connection to be cut at the deadline")
    finally:
        stream.stop()
        _up(mesh.state)
        ops.wait(lambda: _ready("node-1"), 30, "node-1's new ztunnel ready")
    ops.wait(lambda: mesh.get("sleep", "web-api"), 10, "traffic through the new ztunnel")


def _refused(mesh: Mesh, source: str, target: str) -> bool:
    try:
        ops.connect(mesh.pods[source], mesh.ip(target), ops.HTTP_PORT, timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def test_a_ztunnel_restart_keeps_pods_and_traffic_is_back_within_2s(mesh: Mesh) -> None:
    before = {n: wait_running(mesh.client, ns, n)["status"]["containerStatuses"][0] for n, (*_, ns) in PODS.items()}
    processes = mesh.processes()
    for node in NODE_IP:
        _stop_pid(processes[f"{node}/ztunnel"])
    _up(mesh.state)
    started = time.monotonic()
    ops.wait(lambda: mesh.get("sleep", "web-api", path="/restart"), 10, "traffic after the restart", interval=0.02)
    elapsed = time.monotonic() - started
    print(f"traffic back {elapsed:.2f}s after the new ztunnels started")
    assert elapsed < 2.0, f"traffic came back {elapsed:.2f}s after the new ztunnels started"
    assert mesh.get("sleep", "web-api-local") is not None
    assert _resolve(mesh, "sleep", "web-api").stdout.split()[0] == mesh.vip  # the new ztunnel answers names
    for name, (*_, ns) in PODS.items():
        status = mesh.client.get(f"/api/v1/namespaces/{ns}/pods/{name}").json()["status"]["containerStatuses"][0]
        assert status["containerID"] == before[name]["containerID"] and status["restartCount"] == 0
        assert Path(f"/proc/{status['containerID'].removeprefix('mesh://')}").exists()
