"""mesh.gateway.reconcile run by a real mesh-worker against a real istiod, queued through Celery on
a Redis of the test's own; and the Secret kind it reads (authz, validation, stream, kubectl)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from redis import Redis

from mesh.jobs import GATEWAY_RECONCILE
from tests import harness, minica
from tests.integration.reconcile_plane import Plane, eventually, running_plane

pytestmark = pytest.mark.integration

GATEWAYS = "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/gateways"
ROUTES = "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes"
GRANTS = "/apis/gateway.networking.k8s.io/v1beta1/namespaces/{ns}/referencegrants"
SECRETS = "/api/v1/namespaces/{ns}/secrets"
PODS = "/api/v1/namespaces/{ns}/pods"
SELECTOR = "gateway.networking.k8s.io/gateway-name={name},gateway.istio.io/managed=istio.io-gateway-controller"


CERT, KEY = minica.self_signed("shop.example.com")
KEY_B64 = base64.b64encode(KEY).decode()
# The part of the key a leak would show, whichever encoding carried it.
KEY_MARKERS = (KEY_B64[40:80], KEY.decode().splitlines()[1])


def tls_secret(name: str, cert: bytes = CERT, key: bytes = KEY) -> dict:
    return minica.tls_secret(name, cert, key)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    with running_plane(tmp_path_factory.mktemp("ingress-reconcile"), GATEWAY_RECONCILE) as p:
        yield p


def listener(gateway: dict, name: str) -> dict[str, Any]:
    for entry in (gateway.get("status") or {}).get("listeners") or []:
        if entry["name"] == name:
            return {"attachedRoutes": entry["attachedRoutes"], **{c["type"]: c for c in entry["conditions"]}}
    return {}


def ingress_gateway(name: str, secret: str, secret_ns: str | None = None) -> dict:
    ref = {"name": secret, **({"namespace": secret_ns} if secret_ns else {})}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                {"name": "http", "port": 8080, "protocol": "HTTP"},
                {
                    "name": "https",
                    "port": 8443,
                    "protocol": "HTTPS",
                    "hostname": "shop.example.com",
                    "tls": {"mode": "Terminate", "certificateRefs": [ref]},
                },
            ],
        },
    }


def test_https_gateway_deploys_resolves_its_certificate_and_counts_routes(plane: Plane) -> None:
    gw_path = f"{GATEWAYS.format(ns='default')}/shop"
    with plane.istiod.client() as client:
        created = client.post(GATEWAYS.format(ns="default"), json=ingress_gateway("shop", "shop-cert"))
        assert created.status_code == 201, created.text
        plane.reconcile("default", "shop")

        https = eventually(lambda: listener(client.get(gw_path).json(), "https"), "listener status")
        assert https["ResolvedRefs"]["status"] == "False"
        assert https["ResolvedRefs"]["reason"] == "InvalidCertificateRef"
        assert "default/shop-cert" in https["ResolvedRefs"]["message"]
        assert https["Programmed"]["status"] == "False"
        assert listener(client.get(gw_path).json(), "http")["ResolvedRefs"]["status"] == "True"

        # Pods and Service, as docs/ingress.md says.
        made = client.get(PODS.format(ns="default"), params={"labelSelector": SELECTOR.format(name="shop")}).json()
        assert [p["metadata"]["name"] for p in made["items"]] == ["shop-0"]
        pod = made["items"][0]
        assert pod["spec"]["containers"][0]["command"] == [
            "waypoint",
            "--gateway",
            "default/shop",
            "--mode",
            "ingress",
        ]
        assert pod["spec"]["serviceAccountName"] == "shop-istio"
        assert pod["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "shop"
        assert pod["metadata"]["labels"]["istio.io/dataplane-mode"] == "none"
        service = client.get("/api/v1/namespaces/default/services/shop").json()
        assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", 8080), ("https", 8443)]
        gateway = client.get(gw_path).json()
        assert gateway["status"]["addresses"] == [{"type": "IPAddress", "value": service["spec"]["clusterIP"]}]
        assert {c["type"]: c["status"] for c in gateway["status"]["conditions"]}["Accepted"] == "True"

        # Once a gateway pod is ready its IP comes first (the host reaches pod IPs; docs/ingress.md).
        ready = {
            "status": {"phase": "Running", "podIP": "198.18.7.7", "conditions": [{"type": "Ready", "status": "True"}]}
        }
        patched = client.patch(
            f"{PODS.format(ns='default')}/shop-0/status",
            json=ready,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        plane.reconcile("default", "shop")
        eventually(
            lambda: (
                client.get(gw_path).json()["status"].get("addresses")
                == [
                    {"type": "IPAddress", "value": "198.18.7.7"},
                    {"type": "IPAddress", "value": service["spec"]["clusterIP"]},
                ]
            ),
            "the pod IP first, then the clusterIP",
        )

        # The Secret appears: the listener's reference resolves.
        assert client.post(SECRETS.format(ns="default"), json=tls_secret("shop-cert")).status_code == 201
        plane.reconcile("default", "shop")
        eventually(
            lambda: listener(client.get(gw_path).json(), "https")["ResolvedRefs"]["status"] == "True",
            "ResolvedRefs=True",
        )

        # A route attaches to both listeners; its parents status is written.
        backend = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop-web"}}
        backend["spec"] = {"ports": [{"port": 80}], "selector": {"app": "shop-web"}}
        assert client.post("/api/v1/namespaces/default/services", json=backend).status_code == 201
        route = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "shop-route"},
            "spec": {
                "parentRefs": [{"name": "shop"}],
                "hostnames": ["shop.example.com"],
                "rules": [{"backendRefs": [{"name": "shop-web", "port": 80}]}],
            },
        }
        assert client.post(ROUTES.format(ns="default"), json=route).status_code == 201
        plane.reconcile("default", "shop")
        eventually(lambda: listener(client.get(gw_path).json(), "https")["attachedRoutes"] == 1, "attachedRoutes")
        assert listener(client.get(gw_path).json(), "http")["attachedRoutes"] == 1
        parents = eventually(
            lambda: (client.get(f"{ROUTES.format(ns='default')}/shop-route").json().get("status") or {}).get("parents"),
            "route parents status",
        )
        assert parents[0]["parentRef"] == {"name": "shop"}
        assert parents[0]["controllerName"] == "istio.io/gateway-controller"
        conds = {c["type"]: c for c in parents[0]["conditions"]}
        assert conds["Accepted"]["status"] == "True" and conds["ResolvedRefs"]["status"] == "True"

        # A backend that does not exist: BackendNotFound.
        broken = {**route, "metadata": {"name": "broken-route"}}
        broken["spec"] = {**route["spec"], "rules": [{"backendRefs": [{"name": "nowhere", "port": 80}]}]}
        assert client.post(ROUTES.format(ns="default"), json=broken).status_code == 201
        plane.reconcile("default", "shop")
        parents = eventually(
            lambda: (client.get(f"{ROUTES.format(ns='default')}/broken-route").json().get("status") or {}).get(
                "parents"
            ),
            "broken route status",
        )
        conds = {c["type"]: c for c in parents[0]["conditions"]}
        assert conds["ResolvedRefs"]["status"] == "False" and conds["ResolvedRefs"]["reason"] == "BackendNotFound"
        eventually(lambda: listener(client.get(gw_path).json(), "https")["attachedRoutes"] == 2, "two routes")

        client.delete(gw_path)
        plane.reconcile("default", "shop")
        eventually(
            lambda: client.get("/api/v1/namespaces/default/services/shop").status_code == 404, "the Service to go"
        )


def test_cross_namespace_certificate_needs_a_reference_grant(plane: Plane) -> None:
    gw_path = f"{GATEWAYS.format(ns='default')}/edge"
    with plane.istiod.client() as client:
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "certs"}}
        assert client.post("/api/v1/namespaces", json=ns).status_code == 201
        assert client.post(SECRETS.format(ns="certs"), json=tls_secret("edge-cert")).status_code == 201
        assert (
            client.post(GATEWAYS.format(ns="default"), json=ingress_gateway("edge", "edge-cert", "certs")).status_code
            == 201
        )
        plane.reconcile("default", "edge")
        https = eventually(lambda: listener(client.get(gw_path).json(), "https"), "listener status")
        assert https["ResolvedRefs"]["reason"] == "RefNotPermitted"
        assert "certs/edge-cert" in https["ResolvedRefs"]["message"]

        grant = {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": "gateways-read-certs"},
            "spec": {
                "from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default"}],
                "to": [{"group": "", "kind": "Secret"}],
            },
        }
        assert client.post(GRANTS.format(ns="certs"), json=grant).status_code == 201
        plane.reconcile("default", "edge")
        eventually(lambda: listener(client.get(gw_path).json(), "https")["ResolvedRefs"]["status"] == "True", "granted")
        client.delete(gw_path)
        plane.reconcile("default", "edge")


def test_secrets_are_admin_only_and_never_echoed(plane: Plane) -> None:
    istiod = plane.istiod
    with istiod.client() as admin, istiod.client(istiod.reader_token) as reader:
        created = admin.post(SECRETS.format(ns="default"), json=tls_secret("private"))
        assert created.status_code == 201, created.text
        assert created.json()["data"]["tls.key"] == KEY_B64
        for path in (f"{SECRETS.format(ns='default')}/private", SECRETS.format(ns="default"), "/api/v1/secrets"):
            answer = reader.get(path)
            assert answer.status_code == 403, (path, answer.text)
            assert not any(m in answer.text for m in KEY_MARKERS)
        assert reader.get(SECRETS.format(ns="default"), params={"watch": "true"}).status_code == 403

        # stringData is folded into data; type defaults to Opaque.
        opaque = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "opaque"}, "stringData": {"k": "v"}}
        stored = admin.post(SECRETS.format(ns="default"), json=opaque).json()
        assert stored["type"] == "Opaque" and stored["data"] == {"k": "dg=="} and "stringData" not in stored

        # A key that is not a key: 422 naming the field, without the value.
        other_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for bad, field in (
            (tls_secret("bad", key=b"not a key " + KEY[:200]), "data[tls.key]"),
            (tls_secret("bad", cert=b"garbage"), "data[tls.crt]"),
            (tls_secret("bad", key=other_key), "data[tls.key]"),
        ):
            refused = admin.post(SECRETS.format(ns="default"), json=bad)
            assert refused.status_code == 422, refused.text
            assert [c["field"] for c in refused.json()["details"]["causes"]] == [field]
            assert not any(m in refused.text for m in KEY_MARKERS)
            assert KEY[:200].decode().splitlines()[1] not in refused.text
        missing = tls_secret("bad")
        del missing["data"]["tls.key"]
        refused = admin.post(SECRETS.format(ns="default"), json=missing)
        assert refused.status_code == 422 and refused.json()["details"]["causes"][0]["field"] == "data[tls.key]"
        not_b64 = tls_secret("bad")
        not_b64["data"]["tls.key"] = "%%%" + KEY_B64[40:80]
        refused = admin.post(SECRETS.format(ns="default"), json=not_b64)
        assert refused.status_code == 422 and KEY_B64[40:80] not in refused.text

        # Table output: how many keys, never what they hold.
        table = admin.get(
            SECRETS.format(ns="default"), headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
        ).json()
        columns = [c["name"] for c in table["columnDefinitions"]]
        rows = {r["cells"][0]: dict(zip(columns, r["cells"], strict=True)) for r in table["rows"]}
        assert rows["private"]["Type"] == "kubernetes.io/tls" and rows["private"]["Data"] == 2
        assert not any(m in json.dumps(table) for m in KEY_MARKERS)

    # The change stream carries Secrets as references only.
    redis = Redis.from_url(istiod.redis_url)
    try:
        entries = eventually(
            lambda: [
                f for _, f in redis.xrange(istiod.stream) if f[b"kind"] == b"secrets" and f[b"name"] == b"private"
            ],
            "the Secret's stream entry",
        )
        ref = json.loads(entries[0][b"object"])
        assert "data" not in ref and ref["metadata"]["name"] == "private" and ref["metadata"]["resourceVersion"]
        everything = b"".join(v for _, f in redis.xrange(istiod.stream) for v in f.values())
        assert not any(m.encode() in everything for m in KEY_MARKERS)
    finally:
        redis.close()

    logs = b"".join(p.read_bytes() for p in istiod.state_dir.glob("*.log"))
    assert not any(m.encode() in logs for m in KEY_MARKERS)


def test_kubectl_create_secret_tls_and_get_secrets(plane: Plane, tmp_path: Path) -> None:
    harness.need("kubectl", shutil.which("kubectl") is not None, "kubectl not on PATH")
    (tmp_path / "tls.crt").write_bytes(CERT)
    (tmp_path / "tls.key").write_bytes(KEY)

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", "--kubeconfig", str(plane.istiod.kubeconfig), "--cache-dir", str(tmp_path / "cache"), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    made = kubectl(
        "create",
        "secret",
        "tls",
        "kubectl-cert",
        "--cert",
        str(tmp_path / "tls.crt"),
        "--key",
        str(tmp_path / "tls.key"),
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "secret/kubectl-cert created"
    listed = kubectl("get", "secrets")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "DATA", "AGE"]
    row = next(line.split() for line in lines if line.startswith("kubectl-cert "))
    assert row[1:3] == ["kubernetes.io/tls", "2"]
    assert not any(m in listed.stdout for m in KEY_MARKERS)
    got = json.loads(kubectl("get", "secret", "kubectl-cert", "-o", "json").stdout)
    assert base64.b64decode(got["data"]["tls.crt"]) == CERT
