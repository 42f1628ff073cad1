"""Node tokens through istiod: issued once at creation, rotated, revoked, and verifiable by JWKS."""

from __future__ import annotations

import ssl
import time

import httpx
import jwt
import pytest

from mesh.tokens import AUD_CA, NodeTokenVerifier, TokenError
from tests import harness

pytestmark = pytest.mark.integration


def test_a_node_token_is_returned_once_and_never_stored(istiod: harness.Istiod) -> None:
    token = harness.create_node(istiod, "tok-once")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "tok-once" and {"mesh-ca", "mesh-xds", "istiod"} <= set(claims["aud"])
    assert claims["exp"] > time.time() + 300 * 24 * 3600
    with istiod.client() as client:
        stored = client.get("/api/v1/nodes/tok-once").json()
        assert "mesh.istio.io/node-token" not in stored["metadata"].get("annotations", {})
        assert stored["metadata"]["annotations"]["mesh.istio.io/node-token-id"] == claims["jti"]
        listed = client.get("/api/v1/nodes").text
        assert token not in listed
        client.delete("/api/v1/nodes/tok-once")
    assert token not in (istiod.state_dir / "istiod.log").read_text()


def test_jwks_verifies_node_tokens_without_a_token(istiod: harness.Istiod) -> None:
    token = harness.create_node(istiod, "tok-jwks")
    jwks = httpx.get(
        f"{istiod.url}/.well-known/jwks.json", verify=ssl.create_default_context(cafile=str(istiod.ca_file))
    )
    assert jwks.status_code == 200
    verifier = NodeTokenVerifier(jwks.json())
    assert verifier.verify(token, AUD_CA).node == "tok-jwks"
    with pytest.raises(TokenError) as err:
        verifier.verify(token, "somebody-else")
    assert err.value.reason == "wrong-audience"
    with istiod.client() as client:
        client.delete("/api/v1/nodes/tok-jwks")


def test_a_node_token_reads_the_api_until_rotated_or_deleted(istiod: harness.Istiod) -> None:
    token = harness.create_node(istiod, "tok-life")
    with istiod.client(token=token) as node:
        assert node.get("/api/v1/pods").status_code == 200
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "by-node"}}
        assert node.post("/api/v1/namespaces", json=body).status_code == 403
    with istiod.client() as admin:
        rotated = admin.post("/api/v1/nodes/tok-life/token", json={"spec": {"expirationSeconds": 3600}})
        assert rotated.status_code == 201
        fresh = rotated.json()["status"]["token"]
        exp = jwt.decode(fresh, options={"verify_signature": False})["exp"]
        assert 3500 < exp - time.time() <= 3600
    with istiod.client(token=token) as old, istiod.client(token=fresh) as new:
        assert old.get("/api/v1/pods").status_code == 401
        assert new.get("/api/v1/pods").status_code == 200
    with istiod.client(token=istiod.reader_token) as reader:
        assert reader.post("/api/v1/nodes/tok-life/token").status_code == 403
    with istiod.client() as admin:
        admin.delete("/api/v1/nodes/tok-life")
    with istiod.client(token=fresh) as gone:
        assert gone.get("/api/v1/pods").status_code == 401


def test_a_node_writes_only_what_node_restriction_allows(istiod: harness.Istiod) -> None:
    token = harness.create_node(istiod, "tok-writer")
    merge = {"Content-Type": "application/merge-patch+json"}
    pods = "/api/v1/namespaces/default/pods"
    with istiod.client() as admin:
        for name, node in (("mine", "tok-writer"), ("theirs", "other-node"), ("loose", None)):
            spec = {"containers": [{"name": "c"}], **({"nodeName": node} if node else {})}
            admin.post(pods, json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    with istiod.client(token=token) as node:
        assert (
            node.patch(f"{pods}/mine/status", json={"status": {"phase": "Running"}}, headers=merge).status_code == 200
        )
        assert (
            node.patch(f"{pods}/theirs/status", json={"status": {"phase": "Running"}}, headers=merge).status_code == 403
        )
        redirect = {"metadata": {"annotations": {"ambient.istio.io/redirection": "enabled"}}}
        assert node.patch(f"{pods}/mine", json=redirect, headers=merge).status_code == 200
        assert node.patch(f"{pods}/theirs", json=redirect, headers=merge).status_code == 403
        relabel = {"metadata": {"labels": {"app": "evil"}}}
        assert node.patch(f"{pods}/mine", json=relabel, headers=merge).status_code == 403
        other_note = {"metadata": {"annotations": {"example.com/x": "y"}}}
        assert node.patch(f"{pods}/mine", json=other_note, headers=merge).status_code == 403
        bind = {"spec": {"nodeName": "tok-writer"}}
        assert node.patch(f"{pods}/loose", json=bind, headers=merge).status_code == 200
        assert node.patch(f"{pods}/theirs", json=bind, headers=merge).status_code in (403, 422)
        assert node.delete(f"{pods}/mine").status_code == 403
        assert (
            node.patch(
                "/api/v1/nodes/tok-writer/status", json={"status": {"phase": "Running"}}, headers=merge
            ).status_code
            == 200
        )
        assert node.patch("/api/v1/nodes/other-node/status", json={"status": {}}, headers=merge).status_code == 403
    with istiod.client() as admin:
        for name in ("mine", "theirs", "loose"):
            admin.delete(f"{pods}/{name}")
        admin.delete("/api/v1/nodes/tok-writer")
