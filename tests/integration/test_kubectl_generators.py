"""kubectl's typed generators against istiod: `kubectl create namespace|serviceaccount|service ...`
send their object as Kubernetes protobuf, `kubectl run` as JSON; both must create what the command
says. Also: kubectl's protobuf bodies, captured live from the installed kubectl, decode to the
object kubectl itself prints with `--dry-run=client -o json`.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.istiod.api.protobuf import MAGIC, decode_k8s_protobuf
from tests import harness

pytestmark = pytest.mark.integration

PROTOBUF = "application/vnd.kubernetes.protobuf"


@pytest.fixture(scope="module")
def kubectl(istiod: harness.Istiod, tmp_path_factory: pytest.TempPathFactory):
    harness.need("kubectl", shutil.which("kubectl") is not None, "kubectl not on PATH")
    cache = tmp_path_factory.mktemp("kubectl-cache")

    def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", "--kubeconfig", str(istiod.kubeconfig), "--cache-dir", str(cache), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    return run


def get(kubectl, *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def test_create_namespace(kubectl) -> None:
    assert kubectl("create", "namespace", "gen-ns").stdout.strip() == "namespace/gen-ns created"
    try:
        ns = get(kubectl, "namespace", "gen-ns")
        assert ns["metadata"]["name"] == "gen-ns"
        assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "gen-ns"}
        assert ns["status"] == {"phase": "Active"}
        # Every new namespace gets its default service account, as with `kubectl apply`.
        assert get(kubectl, "serviceaccount", "default", "-n", "gen-ns")["metadata"]["namespace"] == "gen-ns"
        again = kubectl("create", "namespace", "gen-ns", check=False)
        assert again.returncode != 0 and 'namespaces "gen-ns" already exists' in again.stderr
    finally:
        kubectl("delete", "namespace", "gen-ns")
    assert kubectl("get", "namespace", "gen-ns", check=False).returncode != 0


def test_create_serviceaccount(kubectl) -> None:
    assert kubectl("create", "serviceaccount", "gen-sa").stdout.strip() == "serviceaccount/gen-sa created"
    try:
        sa = get(kubectl, "serviceaccount", "gen-sa")
        assert sa["metadata"]["name"] == "gen-sa" and sa["metadata"]["namespace"] == "default"
        # Nothing the command did not set: no empty strings, zeros or null timestamps from protobuf.
        assert set(sa) == {"apiVersion", "kind", "metadata"}
        assert set(sa["metadata"]) == {"name", "namespace", "uid", "resourceVersion", "creationTimestamp", "generation"}
    finally:
        kubectl("delete", "serviceaccount", "gen-sa")


@pytest.mark.parametrize(
    ("args", "spec"),
    [
        (
            ["clusterip", "gen-web", "--tcp=80:8080"],
            {"type": "ClusterIP", "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}]},
        ),
        (["clusterip", "gen-headless", "--clusterip=None"], {"type": "ClusterIP", "clusterIP": "None"}),
        (
            ["nodeport", "gen-np", "--tcp=80:8080", "--node-port=30080"],
            {
                "type": "NodePort",
                "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}],
            },
        ),
        (
            ["externalname", "gen-ext", "--external-name=example.com"],
            {"type": "ExternalName", "externalName": "example.com"},
        ),
    ],
    ids=["clusterip", "headless", "nodeport", "externalname"],
)
def test_create_service(kubectl, args: list[str], spec: dict[str, Any]) -> None:
    name = args[1]
    assert kubectl("create", "service", *args).stdout.strip() == f"service/{name} created"
    try:
        svc = get(kubectl, "service", name)
        assert svc["metadata"]["labels"] == {"app": name}
        got = svc["spec"]
        assert got["selector"] == {"app": name}
        for field, value in spec.items():
            assert got[field] == value, field
        if spec["type"] in ("ClusterIP", "NodePort") and "clusterIP" not in spec:
            assert got["clusterIP"].startswith("198.19.")  # allocated from --service-cidr
        assert "" not in got.values() and 0 not in got.values()
    finally:
        kubectl("delete", "service", name)


def test_run_pod(kubectl) -> None:
    # kubectl run builds its pod as JSON (unstructured), unlike the `create` generators.
    out = kubectl("run", "gen-sleep", "--image=busybox", "--command", "--", "sleep", "3600").stdout
    assert out.strip() == "pod/gen-sleep created"
    try:
        pod = get(kubectl, "pod", "gen-sleep")
        assert pod["metadata"]["labels"] == {"run": "gen-sleep"}
        [container] = pod["spec"]["containers"]
        assert container["name"] == "gen-sleep"
        assert container["image"] == "busybox"
        assert container["command"] == ["sleep", "3600"]
        assert pod["spec"]["serviceAccountName"] == "default"
        assert pod["status"]["phase"] == "Pending"
    finally:
        kubectl("delete", "pod", "gen-sleep")


def test_protobuf_errors_are_statuses(istiod: harness.Istiod) -> None:
    headers = {"Content-Type": PROTOBUF}
    with istiod.client() as client:
        bad = client.post("/api/v1/namespaces", content=MAGIC + b"\xff\xff\xff\xff", headers=headers)
        assert bad.status_code == 400, bad.text
        assert bad.json()["reason"] == "BadRequest"
        # A runtime.Unknown envelope naming apps/v1 Deployment.
        deployment = MAGIC + b"\x0a\x15\x0a\x07apps/v1\x12\x0aDeployment\x12\x00"
        refused = client.post("/api/v1/namespaces", content=deployment, headers=headers)
        assert refused.status_code == 415, refused.text
        assert refused.json()["reason"] == "UnsupportedMediaType"
        assert "kubectl apply -f" in refused.json()["message"]
        assert "Deployment (apps/v1)" in refused.json()["message"]


# --- live capture: what the installed kubectl sends ---------------------------------------------

GENERATORS = [
    "create namespace cap-ns",
    "create serviceaccount cap-sa",
    "create service clusterip cap-web --tcp=80:8080",
    "create service nodeport cap-np --tcp=80:8080 --node-port=30080",
    "create service loadbalancer cap-lb --tcp=443:https",
    "create service externalname cap-ext --external-name=example.com",
]


@pytest.fixture(scope="module")
def capture() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A plain HTTP server that records each POST's content type and body and answers 201."""
    bodies: list[tuple[str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            bodies.append((self.headers.get("Content-Type", ""), self.rfile.read(length)))
            reply = b'{"kind":"Status","apiVersion":"v1","status":"Success"}'
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


def _without_empty(value: Any) -> Any:
    """kubectl's `-o json` minus what Go's omitempty or a zero value leaves in (`null`, `{}`, `""`)."""
    if isinstance(value, dict):
        pruned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [], "")}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


@pytest.mark.parametrize("command", GENERATORS)
def test_captured_kubectl_protobuf_decodes_to_kubectls_own_json(
    command: str, capture: tuple[str, list[tuple[str, bytes]]], tmp_path: Path
) -> None:
    harness.need("kubectl", shutil.which("kubectl") is not None, "kubectl not on PATH")
    url, bodies = capture
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")  # empty: the flags say it all
    base = ["kubectl", "--kubeconfig", str(tmp_path / "kubeconfig"), "--server", url, "--token", "t"]
    base += ["--cache-dir", str(tmp_path / "cache")]
    bodies.clear()
    subprocess.run([*base, *command.split()], check=True, capture_output=True, timeout=30)
    [(content_type, body)] = bodies
    assert content_type == PROTOBUF
    printed = subprocess.run(
        [*base, *command.split(), "--dry-run=client", "-o", "json"], check=True, capture_output=True, timeout=30
    )
    assert decode_k8s_protobuf(body) == _without_empty(json.loads(printed.stdout))
