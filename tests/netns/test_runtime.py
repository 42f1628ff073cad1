"""mesh-runtime on a real node: namespaces, the CNI chain (Debian's bridge + host-local), container
processes, restarts, deletion and adoption, driven only through istiod's API.

Needs root, Redis (for istiod) and the CNI plugins in /usr/lib/cni.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh import netns
from tests import harness
from tests.netns.runtime_node import POD_SUBNET, Node, pod_netns, running_node, start_ticks

pytestmark = [pytest.mark.netns]

PY = sys.executable


def _need_everything() -> None:
    harness.need("root", os.geteuid() == 0, "network namespaces need root")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    harness.need("redis", harness.port_open("127.0.0.1", port), f"nothing answers at {redis_url}")
    harness.need("cni-plugins", Path("/usr/lib/cni/bridge").exists(), "apt-get install containernetworking-plugins")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    _need_everything()
    tmp = tmp_path_factory.mktemp("runtime")
    with harness.running_istiod(tmp, "sqlite") as istiod, running_node(istiod, tmp) as node:
        yield node


def status(pod: dict[str, Any]) -> dict[str, Any]:
    return pod.get("status") or {}


def container(pod: dict[str, Any], index: int = 0) -> dict[str, Any]:
    statuses = status(pod).get("containerStatuses") or [{}]
    return statuses[index] if index < len(statuses) else {}


def pid_of(pod: dict[str, Any]) -> int:
    return int(container(pod)["containerID"].removeprefix("mesh://"))


def running_and_ready(pod: dict[str, Any]) -> bool:
    return status(pod).get("phase") == "Running" and all(c.get("ready") for c in status(pod)["containerStatuses"])


def web_server(name: str, workdir: Path) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "image": "python:3",
            "command": [PY, "-m", "http.server"],
            "args": ["$(PORT)", "--bind", "0.0.0.0"],
            "env": [{"name": "PORT", "value": "8080"}],
            "workingDir": str(workdir),
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        }
    ]


def test_node_heartbeat(node: Node) -> None:
    with node.istiod.client() as client:

        def beating() -> bool:
            st = client.get(f"/api/v1/nodes/{node.name}").json().get("status") or {}
            ready = [c for c in st.get("conditions") or [] if c["type"] == "Ready"]
            return bool(ready) and ready[0]["status"] == "True" and "lastHeartbeatTime" in ready[0]

        harness.wait_for(beating, 15, "the Node heartbeat")
        st = client.get(f"/api/v1/nodes/{node.name}").json()["status"]
    assert st["nodeInfo"]["kubeletVersion"] == "mesh-runtime"
    assert {"type": "InternalIP", "address": "198.19.254.11"} in st["addresses"]


def test_pods_get_addresses_run_and_reach_each_other(node: Node, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("hello from the web pod\n")
    node.create_pod("web", web_server("web", tmp_path))
    web = node.wait_pod("web", running_and_ready, "Running and ready")
    st = status(web)
    ip = st["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(POD_SUBNET)
    assert st["podIPs"] == [{"ip": ip}] and st["hostIP"] == "198.19.254.11" and st["startTime"]
    conditions = {c["type"]: c["status"] for c in st["conditions"]}
    assert conditions == {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}
    c = container(web)
    assert c["started"] is True and c["restartCount"] == 0 and "running" in c["state"]
    assert netns.exists(pod_netns(web["metadata"]["uid"]))
    assert (node.dir / "runtime" / "logs" / "default_web_web.log").exists()
    assert (node.ipam_dir / ip).exists()

    fetch = f"import urllib.request as u; assert b'hello' in u.urlopen('http://{ip}:8080/', timeout=5).read()"
    client = node.create_pod("client", [{"name": "curl", "command": [PY, "-c", fetch]}], restartPolicy="Never")
    done = node.wait_pod("client", lambda p: status(p).get("phase") in ("Succeeded", "Failed"), "to finish")
    assert status(done)["phase"] == "Succeeded", (node.dir / "runtime" / "logs" / "default_client_curl.log").read_text()
    terminated = container(done)["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert {c["type"]: c["status"] for c in status(done)["conditions"]}["Ready"] == "False"

    # A pod whose containers already stopped still gets CNI DEL and its netns removed.
    client_ip = status(done)["podIP"]
    node.delete_pod("client")
    harness.wait_for(lambda: not netns.exists(pod_netns(client["metadata"]["uid"])), 15, "client netns removal")
    harness.wait_for(lambda: not (node.ipam_dir / client_ip).exists(), 15, "client IP release")


def test_failures_and_unsupported_containers(node: Node) -> None:
    node.create_pod("fails", [{"name": "c", "command": [PY, "-c", "raise SystemExit(3)"]}], restartPolicy="Never")
    failed = node.wait_pod("fails", lambda p: status(p).get("phase") == "Failed", "Failed")
    assert container(failed)["state"]["terminated"]["exitCode"] == 3
    assert container(failed)["state"]["terminated"]["reason"] == "Error"

    missing = [{"name": "c", "command": ["/nonexistent/program"]}]
    node.create_pod("unstartable", missing, restartPolicy="Always")
    pod = node.wait_pod("unstartable", lambda p: container(p).get("restartCount", 0) >= 2, "2 restarts")
    last = container(pod)["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (128, "StartError") and "/nonexistent/program" in last["message"]

    node.create_pod(
        "odd",
        [
            {"name": "image-only", "image": "nginx"},
            {"name": "from-secret", "command": ["true"], "env": [{"name": "X", "valueFrom": {"secretKeyRef": {}}}]},
        ],
    )
    odd = node.wait_pod("odd", lambda p: len(status(p).get("containerStatuses") or []) == 2, "statuses")
    odd = node.wait_pod("odd", lambda p: "NoCommand" in str(status(p)), "NoCommand")
    assert container(odd, 0)["state"]["waiting"]["reason"] == "NoCommand"
    assert container(odd, 1)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    assert "valueFrom" in container(odd, 1)["state"]["waiting"]["message"]
    assert status(odd)["phase"] == "Pending"
    for name in ("fails", "unstartable", "odd"):
        node.delete_pod(name)


def test_http_and_exec_readiness_probes(node: Node, tmp_path: Path) -> None:
    flag = tmp_path / "ready-flag"
    containers = [
        {
            "name": "web",
            "command": [PY, "-m", "http.server", "8081"],
            "workingDir": str(tmp_path),
            "ports": [{"name": "http", "containerPort": 8081}],
            "readinessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 1},
        },
        {
            "name": "gate",
            "command": ["sleep", "600"],
            "readinessProbe": {
                "exec": {"command": ["test", "-f", str(flag)]},
                "periodSeconds": 1,
                "failureThreshold": 1,
            },
        },
    ]
    node.create_pod("probed", containers)

    def readiness(pod: dict[str, Any]) -> dict[str, bool]:
        return {c["name"]: c["ready"] for c in status(pod).get("containerStatuses") or []}

    pod = node.wait_pod("probed", lambda p: readiness(p) == {"web": True, "gate": False}, "web ready, gate not")
    ready = {c["type"]: c for c in status(pod)["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["message"] == "containers with unready status: [gate]"
    assert status(pod)["phase"] == "Running"
    flag.write_text("ok")
    node.wait_pod("probed", running_and_ready, "the gate to open")
    flag.unlink()
    node.wait_pod("probed", lambda p: readiness(p) == {"web": True, "gate": False}, "the gate to close")
    node.delete_pod("probed")


def test_crashing_container_restarts_with_back_off(node: Node, tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    crash = f"import time; open({str(starts)!r}, 'a').write(f'{{time.time()}}\\n'); raise SystemExit(3)"
    node.create_pod("crash", [{"name": "c", "command": [PY, "-c", crash]}], restartPolicy="Always")
    pod = node.wait_pod("crash", lambda p: container(p).get("restartCount", 0) >= 3, "3 restarts", timeout=40)
    c = container(pod)
    assert c["lastState"]["terminated"]["exitCode"] == 3
    assert status(pod)["phase"] == "Running"
    times = [float(t) for t in starts.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)][:3]
    # back-off 0.5 s, 1 s, 2 s (each plus the interpreter's start-up)
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95 and gaps[2] >= 1.95, gaps
    assert gaps[1] > gaps[0] * 1.4 and gaps[2] > gaps[1] * 1.4, gaps
    waiting = node.wait_pod("crash", lambda p: "waiting" in container(p)["state"], "CrashLoopBackOff")
    assert container(waiting)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    node.delete_pod("crash")


def test_a_pods_processes_see_its_own_resolv_conf_naming_the_node_and_its_namespace(node: Node) -> None:
    host = Path("/etc/resolv.conf").read_text()
    show = "print(open('/etc/resolv.conf').read(), end='')"
    pod = node.create_pod("dns", [{"name": "c", "command": [PY, "-c", show]}], restartPolicy="Never")
    done = node.wait_pod("dns", lambda p: status(p).get("phase") in ("Succeeded", "Failed"), "to finish")
    gateway = str(next(ipaddress.ip_network(POD_SUBNET).hosts()))
    seen = (node.dir / "runtime" / "logs" / "default_dns_c.log").read_text()
    assert (
        seen
        == f"nameserver {gateway}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    )
    assert status(done)["phase"] == "Succeeded"
    assert Path("/etc/resolv.conf").read_text() == host  # the host's is untouched
    etc = netns.ETC_NETNS_DIR / pod_netns(pod["metadata"]["uid"])
    assert (etc / "resolv.conf").read_text() == seen  # what `ip netns exec` (meshctl x exec) mounts too
    node.delete_pod("dns")
    harness.wait_for(lambda: not etc.exists(), 15, "the pod's /etc/netns directory to go with it")


def test_delete_sends_sigterm_then_sigkill_and_releases_the_network(node: Node, tmp_path: Path) -> None:
    mark = tmp_path / "term"
    stubborn = (
        "import signal, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: open({str(mark)!r}, 'w').write('TERM'))\n"
        "while True: time.sleep(0.1)\n"
    )
    pod = node.create_pod("stubborn", [{"name": "c", "command": [PY, "-c", stubborn]}], terminationGracePeriodSeconds=2)
    running = node.wait_pod("stubborn", running_and_ready, "Running")
    pid, ip, uid = pid_of(running), status(running)["podIP"], pod["metadata"]["uid"]
    assert start_ticks(pid) is not None and (node.ipam_dir / ip).exists()
    time.sleep(0.3)  # let the interpreter install its handler
    t0 = time.monotonic()
    node.delete_pod("stubborn")
    harness.wait_for(lambda: start_ticks(pid) is None, 20, "the container to be killed")
    elapsed = time.monotonic() - t0
    assert mark.read_text() == "TERM"  # SIGTERM came first ...
    assert 1.8 <= elapsed < 8, elapsed  # ... and SIGKILL after the 2 s grace period
    harness.wait_for(lambda: not netns.exists(pod_netns(uid)), 15, "netns removal")
    harness.wait_for(lambda: not (node.ipam_dir / ip).exists(), 15, "IP release")
    harness.wait_for(lambda: not (node.records / f"{uid}.json").exists(), 15, "record removal")


def test_restarted_runtime_adopts_running_pods(node: Node, tmp_path: Path) -> None:
    node.create_pod("adoptee", web_server("web", tmp_path))
    before = node.wait_pod("adoptee", running_and_ready, "Running and ready")
    gone = node.create_pod("gone", [{"name": "c", "command": ["sleep", "600"]}], terminationGracePeriodSeconds=1)
    gone_running = node.wait_pod("gone", running_and_ready, "Running")
    pid, gone_pid = pid_of(before), pid_of(gone_running)
    ticks = start_ticks(pid)

    node.kill_runtime(signal.SIGKILL)
    node.delete_pod("gone")  # deleted while no runtime watches: released on restart
    node.start_runtime()

    gone_uid = gone["metadata"]["uid"]
    harness.wait_for(lambda: start_ticks(gone_pid) is None, 20, "the deleted pod's process to be stopped")
    harness.wait_for(lambda: not netns.exists(pod_netns(gone_uid)), 15, "the deleted pod's netns removal")
    time.sleep(1.5)  # a few probe periods of the new runtime
    after = node.wait_pod("adoptee", running_and_ready, "still Running and ready")
    assert pid_of(after) == pid and start_ticks(pid) == ticks  # the very same process
    assert container(after)["restartCount"] == 0
    assert container(after)["state"]["running"]["startedAt"] == container(before)["state"]["running"]["startedAt"]

    # The adopted process (no longer our child) is still supervised: deletion stops it.
    node.delete_pod("adoptee")
    harness.wait_for(lambda: start_ticks(pid) is None, 20, "the adopted container to stop")
    harness.wait_for(lambda: not netns.exists(pod_netns(before["metadata"]["uid"])), 15, "netns removal")


def test_refuses_to_run_in_a_private_mount_namespace(node: Node) -> None:
    """Under `ip netns exec` the pod namespaces it made would be invisible to the node agent."""
    binary = str(harness.VENV_BIN / "mesh-runtime")
    result = subprocess.run(
        ["ip", "netns", "exec", node.netns, binary, "--state-dir", str(node.dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "ip netns exec" in result.stderr and "nsenter --net" in result.stderr


def test_sigterm_leaves_pods_running_and_cleanup_releases_them(node: Node) -> None:
    """Last in this module: it leaves the node without a runtime."""
    pod = node.create_pod("survivor", [{"name": "c", "command": ["sleep", "600"]}])
    running = node.wait_pod("survivor", running_and_ready, "Running")
    pid, ip, uid = pid_of(running), status(running)["podIP"], pod["metadata"]["uid"]

    assert node.kill_runtime(signal.SIGTERM) == 0
    assert start_ticks(pid) is not None  # like a kubelet, a stopping runtime leaves its pods alone

    result = subprocess.run(node.runtime_command("--cleanup"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "released" in result.stderr
    assert start_ticks(pid) is None
    assert not netns.exists(pod_netns(uid)) and not (node.ipam_dir / ip).exists()
    assert not list(node.records.glob("*.json"))
