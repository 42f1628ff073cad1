"""Service-account tokens end to end: istiod's TokenRequest API and mesh-ca, real processes.

A pod's own process (a waypoint, a proxyless gRPC app) gets its workload certificate with the
token mesh-runtime asked for on its behalf (mesh.sa_tokens, the runtime's own function).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography import x509

from dataplane.runtime.app import make_deps
from dataplane.runtime.pods import PodWorker
from dataplane.runtime.settings import RuntimeSettings, resolve
from dataplane.runtime.spec import pod_from_json
from mesh.certs.ca_client import CaClient, CaError
from mesh.certs.csr import make_csr
from mesh.identity import Identity
from mesh.kubeclient import ApiStatusError, Connection, KubeClient
from mesh.sa_tokens import PodToken, request_pod_token
from services.ca.audit import read_audit
from tests import harness

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"
WEB_API = Identity("cluster.local", "default", "web-api")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[harness.Istiod, harness.MeshCa]]:
    tmp = tmp_path_factory.mktemp("sa-tokens")
    with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod) as ca:
        yield istiod, ca


@pytest.fixture(scope="module")
def nodes(mesh) -> dict[str, str]:
    istiod, _ = mesh
    return {name: harness.create_node(istiod, name) for name in ("node-1", "node-2")}


create_pod = harness.create_pod


def delete_pod(istiod: harness.Istiod, name: str) -> None:
    with istiod.client() as client:
        client.delete(f"{PODS}/{name}")


def pod_token(istiod: harness.Istiod, node_token: str, sa: str, pod: str, uid: str) -> PodToken:
    """What mesh-runtime does for a pod: ask with the node's token."""

    async def call() -> PodToken:
        async with KubeClient(Connection(istiod.url, node_token, str(istiod.ca_file))) as client:
            return await request_pod_token(client, "default", sa, pod, uid)

    return asyncio.run(call())


def refusal(istiod: harness.Istiod, node_token: str, sa: str, pod: str, uid: str) -> int:
    with pytest.raises(ApiStatusError) as err:
        pod_token(istiod, node_token, sa, pod, uid)
    return err.value.code


def certificate(ca: harness.MeshCa, token: str, identity: Identity, impersonate: str | None = None) -> list[str]:
    async def call() -> list[str]:
        async with CaClient(ca.address, ca.roots_pem, token) as client:
            return await client.create_certificate(make_csr(identity).csr_pem, 3600, impersonate)

    return asyncio.run(call())


def ca_refusal(ca: harness.MeshCa, token: str, identity: Identity, impersonate: str | None = None) -> str:
    with pytest.raises(CaError) as err:
        certificate(ca, token, identity, impersonate)
    return err.value.code


def test_a_pods_token_gets_its_own_identity_and_nothing_else(mesh, nodes) -> None:
    istiod, ca = mesh
    uid = create_pod(istiod, "web-api-0", "web-api", "node-1")
    got = pod_token(istiod, nodes["node-1"], "web-api", "web-api-0", uid)
    claims = jwt.decode(got.token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:default:web-api" and claims["aud"] == ["istio-ca"]
    assert claims["kubernetes.io"]["pod"] == {"name": "web-api-0", "uid": uid}
    assert 3500 < (got.expires_at - got.issued_at).total_seconds() <= 3602  # a JWT says whole seconds

    chain = certificate(ca, got.token, WEB_API, impersonate=str(WEB_API))
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [str(WEB_API)]

    other = Identity("cluster.local", "default", "billing")
    assert ca_refusal(ca, got.token, other) == "PERMISSION_DENIED"
    assert ca_refusal(ca, got.token, WEB_API, impersonate=str(other)) == "PERMISSION_DENIED"
    assert ca_refusal(ca, got.token, Identity("cluster.local", "kube-system", "web-api")) == "PERMISSION_DENIED"

    audit = read_audit(ca.audit_log)
    mine = [e for e in audit if e.get("caller") == "system:serviceaccount:default:web-api"]
    assert [e["decision"] for e in mine] == ["issued", "denied", "denied", "denied"]
    assert mine[0]["pod"] == "default/web-api-0" and "may get only" in mine[1]["reason"]
    assert got.token not in ca.audit_log.read_text()
    assert got.token not in (ca.state_dir / "mesh-ca.log").read_text()
    delete_pod(istiod, "web-api-0")


def test_deleting_the_pod_revokes_its_token(mesh, nodes) -> None:
    istiod, ca = mesh
    uid = create_pod(istiod, "web-api-1", "web-api", "node-1")
    token = pod_token(istiod, nodes["node-1"], "web-api", "web-api-1", uid).token
    certificate(ca, token, WEB_API)
    delete_pod(istiod, "web-api-1")
    deadline = time.monotonic() + 5
    while True:  # the CA re-checks istiod on a miss, so this is immediate; bounded all the same
        try:
            certificate(ca, token, WEB_API)
        except CaError as e:
            assert e.code == "PERMISSION_DENIED"
            break
        assert time.monotonic() < deadline, "the token still works after its pod was deleted"
        time.sleep(0.1)
    create_pod(istiod, "web-api-1", "web-api", "node-1")  # same name, new uid: still refused
    assert ca_refusal(ca, token, WEB_API) == "PERMISSION_DENIED"
    assert "another uid" in read_audit(ca.audit_log)[-1]["reason"]
    delete_pod(istiod, "web-api-1")


def test_a_node_gets_tokens_only_for_its_own_pods(mesh, nodes) -> None:
    istiod, _ = mesh
    uid = create_pod(istiod, "web-api-2", "web-api", "node-2")
    assert refusal(istiod, nodes["node-1"], "web-api", "web-api-2", uid) == 403  # another node's pod
    assert refusal(istiod, nodes["node-2"], "billing", "web-api-2", uid) == 403  # not the pod's SA
    assert refusal(istiod, nodes["node-2"], "web-api", "web-api-2", "0000-other") == 403  # stale uid
    assert refusal(istiod, nodes["node-2"], "web-api", "no-such-pod", uid) == 403
    pod_token(istiod, nodes["node-2"], "web-api", "web-api-2", uid)  # its own node may
    with istiod.client(token=nodes["node-2"]) as node:  # unbound tokens: admin only
        path = "/api/v1/namespaces/default/serviceaccounts/web-api/token"
        assert node.post(path, json={"spec": {}}).status_code == 403
    with istiod.client(token=istiod.reader_token) as reader:
        assert reader.post(path, json={"spec": {}}).status_code == 403
    with istiod.client() as admin:
        ref = {"kind": "Pod", "apiVersion": "v1", "name": "web-api-2", "uid": "0000-other"}
        assert admin.post(path, json={"spec": {"boundObjectRef": ref}}).status_code == 409
        ref = {"kind": "Pod", "apiVersion": "v1", "name": "no-such-pod"}
        assert admin.post(path, json={"spec": {"boundObjectRef": ref}}).status_code == 404
        ref = {"kind": "Secret", "apiVersion": "v1", "name": "web-api-2"}
        assert admin.post(path, json={"spec": {"boundObjectRef": ref}}).status_code == 400
        answer = admin.post(path, json={"spec": {"expirationSeconds": 10**6, "audiences": ["x"]}})
        assert answer.status_code == 201 and answer.json()["spec"]["expirationSeconds"] == 86400
    delete_pod(istiod, "web-api-2")


def test_a_service_account_token_is_no_node_token(mesh, nodes) -> None:
    istiod, ca = mesh
    uid = create_pod(istiod, "web-api-3", "web-api", "node-1")
    token = pod_token(istiod, nodes["node-1"], "web-api", "web-api-3", uid).token
    with istiod.client(token=token) as impostor:
        assert impostor.get(PODS).status_code == 401
    with istiod.client() as admin:  # even with the audience of node tokens, the CA tells them apart
        ref = {"kind": "Pod", "apiVersion": "v1", "name": "web-api-3", "uid": uid}
        spec = {"boundObjectRef": ref, "audiences": ["mesh-ca", "istiod"]}
        wrong = admin.post("/api/v1/namespaces/default/serviceaccounts/web-api/token", json={"spec": spec})
        wrong_token = wrong.json()["status"]["token"]
    assert ca_refusal(ca, wrong_token, WEB_API) == "UNAUTHENTICATED"
    with istiod.client(token=wrong_token) as impostor:
        assert impostor.get(PODS).status_code == 401
    delete_pod(istiod, "web-api-3")


def test_the_runtime_gives_a_new_pod_its_token_and_environment(mesh, nodes, tmp_path) -> None:
    """mesh-runtime's identity phase (after CNI ADD, before the containers start), against the
    real istiod with node-1's token; the token it writes then gets the pod's certificate."""
    istiod, ca = mesh
    state = tmp_path / "node-1"
    state.mkdir(mode=0o700)
    (state / "token").write_text(nodes["node-1"])
    info = {"name": "node-1", "istiod": istiod.url, "istiod_ca_file": str(istiod.ca_file), "ca": ca.address}
    info |= {"xds_mtls": "127.0.0.1:15013", "root_cert": str(istiod.state_dir / "root-cert.pem")}
    (state / "node.json").write_text(json.dumps(info))
    config = resolve(RuntimeSettings(state_dir=state))
    uid = create_pod(istiod, "web-api-4", "web-api", "node-1")
    with istiod.client() as client:
        obj = client.get(f"{PODS}/web-api-4").json()

    async def prepare() -> tuple[dict, Path]:
        async with KubeClient(Connection(config.istiod, config.token, config.istiod_ca_file)) as client:
            worker = PodWorker(pod_from_json(obj), make_deps(config, None, client))
            worker.rec.cni_result = {"ips": [{"address": "198.18.1.5/24"}]}  # as CNI ADD left it
            await worker.prepare_identity()
            env = dict(worker.runners[0].spec.env)
            await worker.detach_tasks()
            return env, worker.deps.pod_dir(uid)

    env, pod_dir = asyncio.run(prepare())
    token_file = Path(env["MESH_TOKEN_FILE"])
    assert token_file.parent == pod_dir and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert (env["MESH_POD_IP"], env["MESH_CA_ADDRESS"], env["MESH_XDS_ADDRESS"]) == (
        "198.18.1.5",
        ca.address,
        "127.0.0.1:15013",
    )
    assert env["MESH_SERVICE_ACCOUNT"] == "web-api" and env["MESH_NODE_NAME"] == "node-1"
    chain = certificate(ca, token_file.read_text(), WEB_API)
    assert str(WEB_API) in x509.load_pem_x509_certificate(chain[0].encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)
    delete_pod(istiod, "web-api-4")


def test_kubectl_create_token_binds_to_a_pod(mesh, nodes) -> None:
    istiod, ca = mesh
    harness.need("kubectl", shutil.which("kubectl") is not None, "kubectl not on PATH")
    uid = create_pod(istiod, "web-api-5", "web-api", "node-1")
    argv = ["kubectl", "--kubeconfig", str(istiod.kubeconfig), "create", "token", "web-api"]
    argv += ["--bound-object-kind", "Pod", "--bound-object-name", "web-api-5", "--duration", "20m"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["kubernetes.io"]["pod"] == {"name": "web-api-5", "uid": uid}
    assert claims["exp"] - claims["iat"] == 1200
    certificate(ca, token, WEB_API)
    resources = subprocess.run(
        ["kubectl", "--kubeconfig", str(istiod.kubeconfig), "get", "--raw", "/api/v1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    listed = {r["name"]: r for r in json.loads(resources.stdout)["resources"]}
    assert listed["serviceaccounts/token"]["kind"] == "TokenRequest"
    delete_pod(istiod, "web-api-5")
