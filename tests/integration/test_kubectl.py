"""kubectl against istiod: apply Istio-documentation YAML, label, get, watch, delete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests import harness

pytestmark = pytest.mark.integration

SAMPLES = harness.ROOT / "samples" / "demo"


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


def test_apply_creates_every_object_then_reports_unchanged(kubectl) -> None:
    first = kubectl("apply", "-f", str(SAMPLES))
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 16, first.stdout
    assert all(line.endswith(" created") for line in lines), first.stdout
    for expected in (
        "authorizationpolicy.security.istio.io/allow-nothing created",
        "gateway.gateway.networking.k8s.io/waypoint created",
        "httproute.gateway.networking.k8s.io/web-api-canary created",
        "pod/sleep created",
        "service/web-api created",
        "serviceaccount/sleep created",
    ):
        assert expected in lines
    second = kubectl("apply", "-f", str(SAMPLES))
    assert all(line.endswith(" unchanged") for line in second.stdout.strip().splitlines()), second.stdout


def test_modified_apply_patches_only_what_changed(kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", str(SAMPLES))
    policy = (
        (SAMPLES / "authz-allow-sleep.yaml")
        .read_text()
        .replace("cluster.local/ns/default/sa/sleep", "cluster.local/ns/default/sa/other")
    )
    (tmp_path / "p.yaml").write_text(policy)
    out = kubectl("apply", "-f", str(tmp_path / "p.yaml")).stdout
    assert "authorizationpolicy.security.istio.io/web-api-allow-sleep configured" in out
    got = json.loads(kubectl("get", "authorizationpolicy", "web-api-allow-sleep", "-o", "json").stdout)
    assert got["spec"]["rules"][0]["from"][0]["source"]["principals"] == ["cluster.local/ns/default/sa/other"]
    kubectl("apply", "-f", str(SAMPLES / "authz-allow-sleep.yaml"))


def test_label_namespace_and_select_pods(kubectl) -> None:
    kubectl("apply", "-f", str(SAMPLES))
    out = kubectl("label", "namespace", "default", "istio.io/dataplane-mode=ambient", "--overwrite").stdout
    assert "namespace/default" in out
    ns = json.loads(kubectl("get", "namespace", "default", "-o", "json").stdout)
    assert ns["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
    pods = json.loads(kubectl("get", "pods", "-l", "app=sleep", "-o", "json").stdout)
    assert [p["metadata"]["name"] for p in pods["items"]] == ["sleep"]
    assert pods["items"][0]["spec"]["serviceAccountName"] == "sleep"
    table = kubectl("get", "pods", "-A").stdout
    assert table.splitlines()[0].split()[:3] == ["NAMESPACE", "NAME", "READY"]
    kubectl("label", "namespace", "default", "istio.io/dataplane-mode-")


def test_api_resources_lists_every_kind(kubectl) -> None:
    out = kubectl("api-resources").stdout
    for kind in (
        "Namespace",
        "Node",
        "ServiceAccount",
        "Pod",
        "Service",
        "AuthorizationPolicy",
        "PeerAuthentication",
        "RequestAuthentication",
        "VirtualService",
        "DestinationRule",
        "ServiceEntry",
        "WorkloadEntry",
        "Gateway",
        "HTTPRoute",
        "GRPCRoute",
    ):
        assert f" {kind}\n" in out + "\n", f"{kind} missing from api-resources:\n{out}"


def test_watch_sees_a_change(kubectl, istiod: harness.Istiod, tmp_path: Path) -> None:
    kubectl("apply", "-f", str(SAMPLES))
    cache = tmp_path / "cache"
    cmd = [
        "kubectl",
        "--kubeconfig",
        str(istiod.kubeconfig),
        "--cache-dir",
        str(cache),
        "get",
        "pods",
        "--watch",
        "--output-watch-events",
    ]
    watcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # let the initial list arrive before changing anything
        kubectl("label", "pod", "sleep", "watched=yes", "--overwrite")
        deadline = time.monotonic() + 10
        seen = []
        assert watcher.stdout is not None
        os.set_blocking(watcher.stdout.fileno(), False)
        while time.monotonic() < deadline and not any(line.startswith("MODIFIED") for line in seen):
            chunk = watcher.stdout.readline()
            if chunk:
                seen.append(chunk.strip())
            else:
                time.sleep(0.05)
        assert any(s.split()[:2] == ["MODIFIED", "sleep"] for s in seen), seen
        assert seen[0].split()[:2] == ["EVENT", "NAME"], seen
    finally:
        watcher.terminate()
        watcher.wait(5)
    kubectl("label", "pod", "sleep", "watched-")


def test_delete_removes_and_reports(kubectl) -> None:
    kubectl("apply", "-f", str(SAMPLES))
    out = kubectl("delete", "-f", str(SAMPLES / "web-api-canary.yaml")).stdout
    assert 'httproute.gateway.networking.k8s.io "web-api-canary" deleted' in out
    missing = kubectl("get", "httproute", "web-api-canary", check=False)
    assert missing.returncode != 0
    assert 'httproutes.gateway.networking.k8s.io "web-api-canary" not found' in missing.stderr
    out = kubectl("delete", "pod", "web-api-v2").stdout
    assert 'pod "web-api-v2" deleted' in out
    kubectl("apply", "-f", str(SAMPLES))


def test_invalid_manifest_is_refused_with_the_field(kubectl, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: bad\nspec:\n  action: MAYBE\n"
    )
    result = kubectl("apply", "-f", str(bad), check=False)
    assert result.returncode != 0
    assert "spec.action" in result.stderr and "MAYBE" in result.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: u\nspec:\n  containers:\n  - name: c\n    bogus: 1\n"
    )
    result = kubectl("apply", "-f", str(unknown), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.containers[0].bogus"' in result.stderr
    assert kubectl("get", "pod", "u", check=False).returncode != 0


def test_strategic_merge_on_a_custom_resource_is_refused_like_the_apiserver(kubectl) -> None:
    kubectl("apply", "-f", str(SAMPLES))
    result = kubectl("patch", "authorizationpolicy", "allow-nothing", "-p", '{"spec":{"action":"DENY"}}', check=False)
    assert result.returncode != 0
    assert "application/strategic-merge-patch+json is not supported" in result.stderr
    ok = kubectl("patch", "authorizationpolicy", "allow-nothing", "--type=merge", "-p", '{"spec":{"action":"AUDIT"}}')
    assert "patched" in ok.stdout
    kubectl(
        "patch",
        "authorizationpolicy",
        "allow-nothing",
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/spec/action"}]',
    )
