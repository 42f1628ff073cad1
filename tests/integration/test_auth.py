"""Authentication and authorization: TLS by default, tokens, read-only callers, key file modes."""

from __future__ import annotations

import ssl
import stat

import httpx
import pytest

from tests import harness

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"


def test_requests_without_a_valid_token_are_401(istiod: harness.Istiod) -> None:
    verify = ssl.create_default_context(cafile=str(istiod.ca_file))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {istiod.token}"}):
        for path in (PODS, "/api", "/apis", "/openapi/v3", "/metrics"):
            response = httpx.get(istiod.url + path, headers=headers, verify=verify)
            assert response.status_code == 401, (path, headers)
            assert response.json()["reason"] == "Unauthorized"
    assert httpx.get(istiod.url + "/healthz", verify=verify).text == "ok"
    assert httpx.get(istiod.url + "/readyz", verify=verify).status_code == 200


def test_read_only_token_reads_but_never_writes(istiod: harness.Istiod) -> None:
    with istiod.client(token=istiod.reader_token) as reader, istiod.client() as admin:
        assert reader.get(PODS).status_code == 200
        assert reader.get("/api/v1/namespaces/default").status_code == 200
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ro"}, "spec": {"containers": [{"name": "c"}]}}
        refused = reader.post(PODS, json=body)
        assert refused.status_code == 403
        assert refused.json()["message"] == (
            'pods is forbidden: User "reader" cannot create resource "pods" in API group "" in the namespace "default"'
        )
        assert admin.post(PODS, json=body).status_code == 201
        assert reader.delete(f"{PODS}/ro").status_code == 403
        assert (
            reader.patch(f"{PODS}/ro", json={}, headers={"Content-Type": "application/merge-patch+json"}).status_code
            == 403
        )
        assert admin.get(f"{PODS}/ro").status_code == 200
        admin.delete(f"{PODS}/ro")


def test_tls_is_served_and_plain_http_is_not(istiod: harness.Istiod) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(istiod.url.replace("https://", "http://") + "/healthz", timeout=3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(istiod.url + "/healthz", timeout=3)  # not trusted without istiod's CA


def test_secrets_are_kept_with_mode_0600(istiod: harness.Istiod) -> None:
    for name in ("admin-token", "reader-token", "istiod-ca-key.pem", "istiod-key.pem", "kubeconfig"):
        mode = stat.S_IMODE((istiod.state_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    assert stat.S_IMODE(istiod.state_dir.stat().st_mode) == 0o700
    log = (istiod.state_dir / "istiod.log").read_text()
    assert istiod.token not in log and istiod.reader_token not in log


def test_static_token_file_adds_principals(tmp_path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text('ops-token-123,ops,1001,"system:masters"\nview-token-456,viewer,1002,"viewers"\n')
    args = ["--token-auth-file", str(tokens)]
    with (
        harness.running_istiod(tmp_path, "sqlite", extra_args=args) as istiod,
        istiod.client(token="ops-token-123") as ops,
        istiod.client(token="view-token-456") as viewer,
    ):
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}}
        assert ops.post("/api/v1/namespaces", json=body).status_code == 201
        assert viewer.get("/api/v1/namespaces/ops").status_code == 200
        assert viewer.delete("/api/v1/namespaces/ops").status_code == 403
