"""What a pod's containers learn about their identity: the MESH_* environment, the token file,
and when the token is renewed (docs/waypoint.md, "Identity")."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dataplane.runtime import pod_token
from dataplane.runtime.pod_env import MeshEndpoints, mesh_env, token_path
from dataplane.runtime.pod_token import PodTokenKeeper, refresh_delay, retry_delay
from dataplane.runtime.settings import RuntimeSettings, resolve
from dataplane.runtime.spec import PodSpec, pod_from_json
from mesh.kubeclient import ApiStatusError
from mesh.sa_tokens import PodToken, TokenRequestError, parse_answer, token_request, write_token

pytestmark = pytest.mark.unit

MESH = MeshEndpoints("node-1", "/state/root-cert.pem", "198.19.255.1:15012", "198.19.255.1:15013")


def pod(automount: bool | None = None, env: list | None = None, args: list | None = None) -> PodSpec:
    spec: dict = {
        "nodeName": "node-1",
        "serviceAccountName": "web-api",
        "containers": [
            {"name": "app", "command": ["server"], "args": args or [], "env": env or []},
            {"name": "side", "command": ["helper"]},
        ],
    }
    if automount is not None:
        spec["automountServiceAccountToken"] = automount
    return pod_from_json({"metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1"}, "spec": spec})


def test_every_container_gets_the_contract_variables(tmp_path: Path) -> None:
    p = pod()
    token = token_path(tmp_path / "u-1")
    ready = p.with_base_env(mesh_env(p, "198.18.1.5", token, MESH))
    for container in ready.containers:
        env = dict(container.env)
        assert env["MESH_POD_NAME"] == "web-0" and env["MESH_POD_NAMESPACE"] == "shop"
        assert env["MESH_POD_IP"] == "198.18.1.5" and env["MESH_NODE_NAME"] == "node-1"
        assert env["MESH_SERVICE_ACCOUNT"] == "web-api" and env["MESH_TOKEN_FILE"] == str(token)
        assert env["MESH_ROOT_CERT"] == MESH.root_cert and env["MESH_CA_ADDRESS"] == MESH.ca_address
        assert env["MESH_XDS_ADDRESS"] == MESH.xds_address
        assert env["HOSTNAME"] == "web-0" and "PATH" in env


def test_args_and_env_may_refer_to_them_and_env_overrides_them() -> None:
    p = pod(
        env=[{"name": "MESH_CA_ADDRESS", "value": "127.0.0.1:9"}, {"name": "LISTEN", "value": "$(MESH_POD_IP):80"}],
        args=["--id", "$(MESH_SERVICE_ACCOUNT).$(MESH_POD_NAMESPACE)"],
    )
    app = p.with_base_env(mesh_env(p, "198.18.1.5", None, MESH)).containers[0]
    assert app.argv == ("server", "--id", "web-api.shop")
    env = dict(app.env)
    assert env["LISTEN"] == "198.18.1.5:80" and env["MESH_CA_ADDRESS"] == "127.0.0.1:9"


def test_no_token_when_the_pod_opts_out_and_unknown_endpoints_are_left_out() -> None:
    assert pod(automount=False).automount_token is False
    assert pod().automount_token is True and pod(automount=True).automount_token is True
    env = mesh_env(pod(automount=False), "198.18.1.5", None, MeshEndpoints("node-1"))
    assert "MESH_TOKEN_FILE" not in env and "MESH_CA_ADDRESS" not in env and "MESH_XDS_ADDRESS" not in env
    assert env["MESH_SERVICE_ACCOUNT"] == "web-api"


def test_the_service_account_defaults_to_default() -> None:
    bare = pod_from_json({"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": []}})
    assert bare.service_account == "default"


def test_endpoints_come_from_node_json_and_flags_win(tmp_path: Path) -> None:
    info = {"name": "n", "istiod": "https://a:1", "ca": "10.0.0.1:15012", "xds_mtls": "10.0.0.1:15013"}
    info["root_cert"] = "/s/root-cert.pem"
    (tmp_path / "node.json").write_text(json.dumps(info))
    (tmp_path / "token").write_text("t")
    config = resolve(RuntimeSettings(state_dir=tmp_path))
    assert (config.ca_address, config.xds_address, config.root_cert) == (
        "10.0.0.1:15012",
        "10.0.0.1:15013",
        "/s/root-cert.pem",
    )
    assert config.pod_tokens
    config = resolve(RuntimeSettings(state_dir=tmp_path, xds_address="127.0.0.1:1", no_pod_tokens=True))
    assert config.xds_address == "127.0.0.1:1" and not config.pod_tokens


def test_renewal_at_eighty_percent_and_capped_retries() -> None:
    issued = datetime(2030, 1, 1, tzinfo=UTC)
    token = PodToken("t", issued, issued + timedelta(seconds=3600))
    assert refresh_delay(token, issued) == pytest.approx(2880)
    assert refresh_delay(token, issued + timedelta(hours=2)) == 0
    delays = [None]
    for _ in range(8):
        delays.append(retry_delay(delays[-1]))
    assert delays[1:] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_token_request_and_answer() -> None:
    body = token_request("web-0", "u-1")
    assert body["kind"] == "TokenRequest" and body["spec"]["audiences"] == ["istio-ca"]
    assert body["spec"]["boundObjectRef"] == {"kind": "Pod", "apiVersion": "v1", "name": "web-0", "uid": "u-1"}
    now = datetime(2030, 1, 1, tzinfo=UTC)
    got = parse_answer({"status": {"token": "x.y.z", "expirationTimestamp": "2030-01-01T01:00:00Z"}}, now)
    assert got.expires_at - got.issued_at == timedelta(hours=1)
    for bad in ({}, {"status": {"token": "x"}}, {"status": {"token": "x", "expirationTimestamp": "soon"}}):
        with pytest.raises(TokenRequestError):
            parse_answer(bad, now)
    with pytest.raises(TokenRequestError, match="expired"):
        parse_answer({"status": {"token": "x", "expirationTimestamp": "2029-01-01T00:00:00Z"}}, now)


def test_the_token_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    path = token_path(tmp_path / "pods" / "u-1")
    write_token(path, "first")
    write_token(path, "second")
    assert path.read_text() == "second" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["token"]


def test_a_refused_token_request_is_retried_and_explained_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pod_token, "RETRY_FIRST", 0.01)
    answers: list = [ApiStatusError(403, "Forbidden", "not bound to this node"), OSError("connection refused")]
    now = datetime.now(UTC)
    answers.append(PodToken("secret.jwt.value", now, now + timedelta(hours=1)))

    async def request(_pod: PodSpec) -> PodToken:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    waiting: list[str] = []
    path = token_path(tmp_path / "u-1")
    keeper = PodTokenKeeper(pod(), path, request, waiting.append)
    asyncio.run(keeper.obtain())
    assert path.read_text() == "secret.jwt.value" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(waiting) == 2 and "403 Forbidden: not bound to this node" in waiting[0]
    assert "connection refused" in waiting[1] and "retrying" in waiting[1]
    assert "secret.jwt.value" not in caplog.text
