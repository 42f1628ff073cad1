"""meshctl against real istiod and mesh-ca processes: kubeconfig, apply, changes, node, x cert."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from tests import harness

pytestmark = pytest.mark.integration

SAMPLES = harness.ROOT / "samples" / "demo"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[harness.Istiod, harness.MeshCa]]:
    tmp = tmp_path_factory.mktemp("meshctl")
    with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod) as ca:
        yield istiod, ca


def meshctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(harness.VENV_BIN / "meshctl"), *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"meshctl {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def test_kubeconfig_is_private_and_complete(mesh, tmp_path) -> None:
    istiod, _ = mesh
    out = tmp_path / "kc"
    meshctl("kubeconfig", "--state-dir", str(istiod.state_dir), "-o", str(out))
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    config = yaml.safe_load(out.read_text())
    assert config["clusters"][0]["cluster"]["server"] == istiod.url
    assert config["users"][0]["user"]["token"] == istiod.token
    missing = meshctl("kubeconfig", "--state-dir", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 1 and "start istiod" in missing.stderr


def test_apply_reports_created_then_unchanged_then_errors(mesh, tmp_path) -> None:
    istiod, _ = mesh
    state = str(istiod.state_dir)
    first = meshctl("apply", "-f", str(SAMPLES), "--state-dir", state).stdout.splitlines()
    assert "pod/sleep created" in first and "authorizationpolicy.security.istio.io/allow-nothing created" in first
    second = meshctl("apply", "-f", str(SAMPLES), "--state-dir", state).stdout.splitlines()
    assert all(line.endswith(" unchanged") for line in second)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: b}\nspec: {action: NO}\n"
    )
    refused = meshctl("apply", "-f", str(bad), "--state-dir", state, check=False)
    assert refused.returncode == 1 and "spec.action" in refused.stderr


def test_changes_shows_the_stream(mesh) -> None:
    istiod, _ = mesh
    harness.create_node(istiod, "changes-node")
    out = meshctl("changes", "--stream", istiod.stream, "--count", "3").stdout
    assert out.splitlines()[0].split() == ["REVISION", "OP", "KIND", "NAMESPACE", "NAME"]
    assert "changes-node" in out


def test_node_create_and_cert_show_the_node_rule(mesh) -> None:
    istiod, ca = mesh
    state = str(istiod.state_dir)
    for node in ("cli-1", "cli-2"):
        meshctl("node", "create", node, "--state-dir", state)
        assert stat.S_IMODE(os.stat(istiod.state_dir / "nodes" / f"{node}.token").st_mode) == 0o600
    with istiod.client() as client:
        client.post(
            "/api/v1/namespaces/default/pods",
            json={
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "cli-pod"},
                "spec": {"serviceAccountName": "cli-sa", "nodeName": "cli-1", "containers": [{"name": "c"}]},
            },
        )
    identity = "spiffe://cluster.local/ns/default/sa/cli-sa"
    ok = meshctl("x", "cert", "--state-dir", state, "--ca", ca.address, "--node", "cli-1", "--identity", identity)
    assert f"cli-1 asks for {identity}: issued: {identity}" in ok.stdout
    no = meshctl(
        "x", "cert", "--state-dir", state, "--ca", ca.address, "--node", "cli-2", "--identity", identity, check=False
    )
    assert no.returncode == 3 and "refused: PERMISSION_DENIED" in no.stdout
    old = (istiod.state_dir / "nodes" / "cli-1.token").read_text()
    meshctl("node", "token", "cli-1", "--state-dir", state)
    assert (istiod.state_dir / "nodes" / "cli-1.token").read_text() != old
    again = meshctl("x", "cert", "--state-dir", state, "--ca", ca.address, "--node", "cli-1", "--identity", identity)
    assert "issued" in again.stdout
    unknown = meshctl("x", "cert", "--state-dir", state, "--node", "cli-9", "--identity", identity, check=False)
    assert unknown.returncode == 1 and "meshctl node create cli-9" in unknown.stderr
