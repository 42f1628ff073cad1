"""The local cluster end to end, as root: `meshctl cluster up`, pods on two nodes, enrollment by a
label, and `meshctl cluster down` leaving nothing behind."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mesh import netns
from tests import harness

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

MESHCTL = str(harness.VENV_BIN / "meshctl")


def meshctl(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"meshctl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def leftovers() -> dict[str, list[str]]:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "route", "show", "type", "unreachable"], capture_output=True, text=True).stdout
    return {
        "netns": [n for n in netns.list_names("mesh-") if not n.startswith("mesh-t-")],
        # pods' resolv.conf files (/etc/netns/NAME/), which go with their namespaces
        "etc_netns": sorted(p.name for p in netns.ETC_NETNS_DIR.glob("mesh-*") if not p.name.startswith("mesh-t-")),
        "links": [line.split(":")[1].strip() for line in links.splitlines() if ": mesh-" in line],
        "routes": [r for r in routes.splitlines() if r.startswith("unreachable 198.1")],
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    harness.need("root", os.geteuid() == 0)
    harness.need("redis", harness.port_open("127.0.0.1", 6379))
    if netns.exists("mesh-underlay"):
        pytest.skip("a cluster is already up on this machine (meshctl cluster down first)")
    state = tmp_path_factory.mktemp("cluster")
    try:
        meshctl("cluster", "up", "--nodes", "2", "--state-dir", str(state))
        yield state
    finally:
        meshctl("cluster", "down", "--state-dir", str(state), check=False)
    assert leftovers() == {"netns": [], "etc_netns": [], "links": [], "routes": []}


def api(state: Path) -> httpx.Client:
    token = (state / "admin-token").read_text().strip()
    verify = ssl.create_default_context(cafile=str(state / "istiod-ca.pem"))
    return httpx.Client(
        base_url="https://198.19.255.1:6443", headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=30
    )


def wait_running(client: httpx.Client, ns: str, name: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    pod: dict = {}
    while time.monotonic() < deadline:
        pod = client.get(f"/api/v1/namespaces/{ns}/pods/{name}").json()
        if (pod.get("status") or {}).get("phase") == "Running" and pod["status"].get("podIP"):
            return pod
        time.sleep(0.2)
    raise AssertionError(f"pod {ns}/{name} not running: {json.dumps(pod.get('status'))}")


def server_pod(name: str, node: str, port: int = 8080) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "web", "command": ["python3", "-m", "http.server", str(port), "--bind", "0.0.0.0"]}
            ],
        },
    }


def test_cluster_up_is_idempotent_and_registers_both_nodes(cluster: Path) -> None:
    meshctl("cluster", "up", "--nodes", "2", "--state-dir", str(cluster))
    with api(cluster) as client:
        nodes = {n["metadata"]["name"]: n for n in client.get("/api/v1/nodes").json()["items"]}
    assert set(nodes) == {"node-1", "node-2"}
    assert nodes["node-1"]["spec"]["podCIDR"] == "198.18.1.0/24"
    for i in (1, 2):
        token = cluster / "nodes" / f"node-{i}" / "token"
        assert oct(token.stat().st_mode & 0o777) == "0o600"


def test_pods_on_two_nodes_reach_each_other(cluster: Path) -> None:
    with api(cluster) as client:
        client.post("/api/v1/namespaces/default/pods", json=server_pod("web-2", "node-2")).raise_for_status()
        pod = wait_running(client, "default", "web-2")
        ip = pod["status"]["podIP"]
        assert ip.startswith("198.18.2.")
        probe = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe-1"},
            "spec": {
                "nodeName": "node-1",
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "c",
                        "command": [
                            "python3",
                            "-c",
                            f"import urllib.request as u; print(u.urlopen('http://{ip}:8080/', timeout=5).status)",
                        ],
                    }
                ],
            },
        }
        deadline = time.monotonic() + 20
        client.post("/api/v1/namespaces/default/pods", json=probe).raise_for_status()
        phase = ""
        while time.monotonic() < deadline:
            phase = (client.get("/api/v1/namespaces/default/pods/probe-1").json().get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(0.2)
        assert phase == "Succeeded"  # node-1's pod fetched a page from node-2's pod across the underlay
        for name in ("web-2", "probe-1"):
            client.delete(f"/api/v1/namespaces/default/pods/{name}")


def test_labelling_the_namespace_captures_its_pods_without_restarting_them(cluster: Path) -> None:
    with api(cluster) as client:
        client.post(
            "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "capture"}}
        ).raise_for_status()
        pods = "/api/v1/namespaces/capture/pods"
        for name, node in (("a", "node-1"), ("b", "node-2")):
            body = server_pod(name, node)
            client.post(pods, json=body).raise_for_status()
        before = {n: wait_running(client, "capture", n)["status"]["containerStatuses"][0] for n in ("a", "b")}
        client.patch(
            "/api/v1/namespaces/capture",
            json={"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
        deadline = time.monotonic() + 5
        annotated: dict = {}
        while time.monotonic() < deadline:
            annotated = {n: (client.get(f"{pods}/{n}").json()["metadata"].get("annotations") or {}) for n in ("a", "b")}
            if all(a.get("ambient.istio.io/redirection") == "enabled" for a in annotated.values()):
                break
            time.sleep(0.1)
        assert all(a.get("ambient.istio.io/redirection") == "enabled" for a in annotated.values()), annotated
        for name in ("a", "b"):
            pod = client.get(f"{pods}/{name}").json()
            netns_name = f"mesh-pod-{pod['metadata']['uid'].replace('-', '')[:12]}"
            rules = subprocess.run(
                ["nsenter", f"--net=/var/run/netns/{netns_name}", "--", "iptables-save", "-t", "nat"],
                capture_output=True,
                text=True,
            ).stdout
            assert "ISTIO_OUTPUT" in rules and "--to-ports 15001" in rules, rules
            status = pod["status"]["containerStatuses"][0]
            assert status["restartCount"] == before[name]["restartCount"] == 0
            assert status["containerID"] == before[name]["containerID"]  # same process: mesh://{pid}
        client.delete("/api/v1/namespaces/capture")
