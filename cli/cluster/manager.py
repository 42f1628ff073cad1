"""`meshctl cluster up|down|status`: the control plane plus N nodes, and a state file to undo it.

`up` is idempotent: what exists and runs is kept; what is missing is made. Everything made is
recorded in `{state}/cluster.json` before it is made, so `down` can remove it after a crash.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mesh import netns

from .. import kubeconfig
from . import network, registration, topology
from .processes import BIN, Process, available, start, stop_all

Progress = Callable[[str], None]
STATE_FILE = "cluster.json"
ISTIOD = f"https://{topology.ROOT_IP}:6443"


@dataclass
class ClusterState:
    nodes: int = 0
    network: bool = False
    processes: list[Process] = field(default_factory=list)

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState:
        path = state_dir / STATE_FILE
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls(raw.get("nodes", 0), raw.get("network", False), [Process(**p) for p in raw.get("processes", [])])

    def save(self, state_dir: Path) -> None:
        path = state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"nodes": self.nodes, "network": self.network, "processes": [p.to_json() for p in self.processes]},
                indent=2,
            )
        )
        tmp.replace(path)

    def running(self, name: str) -> Process | None:
        for p in self.processes:
            if p.name == name and p.alive():
                return p
        return None


def node_dir(state_dir: Path, node: topology.NodePlan) -> Path:
    return state_dir / "nodes" / node.name


def up(state_dir: Path, count: int, progress: Progress) -> ClusterState:
    """Bring the cluster up (or complete it)."""
    if os.geteuid() != 0:
        raise network.ClusterError("cluster up needs root (network namespaces, veths, routes)")
    topology.nodes(count)
    _ensure_packages(progress)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = ClusterState.load(state_dir)
    if state.network and state.nodes != count:
        raise network.ClusterError(f"a cluster of {state.nodes} nodes exists; run `meshctl cluster down` first")
    if not (
        state.network
        and netns.exists(topology.UNDERLAY_NS)
        and all(netns.exists(n.netns) for n in topology.nodes(count))
    ):
        network.teardown([], max(count, state.nodes), progress)  # remove any half-built remains
        state.nodes, state.network = count, True
        state.save(state_dir)
        network.build(count, progress)
    _control_plane(state_dir, state, progress)
    client = _admin_client(state_dir)
    for node in topology.nodes(count):
        _register(state_dir, node, client, progress)
        _node_processes(state_dir, state, node, progress)
    path = kubeconfig.write_kubeconfig(state_dir, server=ISTIOD)
    progress(f"kubeconfig written to {path}")
    return state


REQUIRED = {
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/sbin/iptables": "iptables",
    "/usr/bin/nsenter": "util-linux",
}


def _ensure_packages(progress: Progress) -> None:
    """Install the Debian packages the nodes need (CNI plugins, iptables) when they are missing."""
    missing = sorted({pkg for path, pkg in REQUIRED.items() if not Path(path).exists()})
    if not missing:
        return
    progress(f"installing {' '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise network.ClusterError(f"could not install {' '.join(missing)}: {result.stderr.strip()[-300:]}")


def _control_plane(state_dir: Path, state: ClusterState, progress: Progress) -> None:
    ip = topology.ROOT_IP
    services = [
        (
            "istiod",
            [
                "--listen",
                f"{ip}:6443",
                "--tls-san",
                ip,
                "--metrics-listen",
                f"{ip}:15014",
                "--service-cidr",
                topology.SERVICE_RANGE,
            ],
            lambda: _https_ready(state_dir),
        ),
        (
            "mesh-ca",
            # --min-cert-ttl 60: lets a ztunnel started with --cert-ttl 60 rotate within a minute (tests);
            # the default lifetime stays 24 h.
            [
                "--listen",
                f"{ip}:15012",
                "--tls-san",
                ip,
                "--xds-san",
                ip,
                "--metrics-listen",
                f"{ip}:15016",
                "--min-cert-ttl",
                "60",
            ],
            lambda: (state_dir / "xds-cert.pem").exists() and _port_open(ip, 15012),
        ),
        (
            "mesh-xds",
            ["--listen", f"{ip}:15010", "--mtls-listen", f"{ip}:15013", "--admin-listen", f"{ip}:15011"],
            lambda: _http_ready(f"http://{ip}:15011/readyz"),
        ),
        ("mesh-worker", [], lambda: True),
    ]
    for name, args, ready in services:
        if state.running(name):
            continue
        progress(f"starting {name}")
        proc = start(name, name, ["--state-dir", str(state_dir), *args], state_dir / f"{name}.log")
        state.processes = [p for p in state.processes if p.name != name] + [proc]
        state.save(state_dir)
        _wait(ready, 60, f"{name} to be ready (see {state_dir / (name + '.log')})", proc)


def _node_processes(state_dir: Path, state: ClusterState, node: topology.NodePlan, progress: Progress) -> None:
    ndir = node_dir(state_dir, node)
    common = [
        "--node",
        node.name,
        "--state-dir",
        str(ndir),
        "--istiod",
        ISTIOD,
        "--istiod-ca-file",
        str(state_dir / "istiod-ca.pem"),
        "--token-file",
        str(ndir / "token"),
    ]
    # ztunnel reads the rest (its underlay IP, mesh-ca, mesh-xds, the trust bundle) from node.json.
    ztunnel = ["--node", node.name, "--state-dir", str(ndir), "--token-file", str(ndir / "token")]
    for program, args in (("mesh-runtime", common), ("mesh-node-agent", common), ("ztunnel", ztunnel)):
        name = f"{node.name}/{program}"
        if state.running(name) or not available(program):
            continue
        progress(f"{node.name}: starting {program}")
        proc = start(name, program, args, ndir / f"{program}.log", netns=node.netns)
        state.processes = [p for p in state.processes if p.name != name] + [proc]
        state.save(state_dir)


def _register(state_dir: Path, node: topology.NodePlan, client: httpx.Client, progress: Progress) -> None:
    """The Node object, its token (kept 0600) and node.json, made once."""
    ndir = node_dir(state_dir, node)
    registration.prepare_node_dir(ndir)
    registration.register(client, node.name, node.pod_cidr, ndir / "token", progress)
    info = registration.node_info(
        name=node.name,
        ip=node.ip,
        pod_cidr=node.pod_cidr,
        istiod=ISTIOD,
        istiod_ca_file=str(state_dir / "istiod-ca.pem"),
        ca=f"{topology.ROOT_IP}:15012",
        xds=f"{topology.ROOT_IP}:15010",
        xds_mtls=f"{topology.ROOT_IP}:15013",
        root_cert=str(state_dir / "root-cert.pem"),
        netns=node.netns,
    )
    registration.write_node_files(ndir, info, topology.conflist(node, str(ndir)))


def down(state_dir: Path, progress: Progress) -> list[str]:
    """Stop every process and remove every namespace, link and route the cluster made."""
    state = ClusterState.load(state_dir)
    left: list[str] = []
    # The nodes' processes first, then the control plane's; within each group all at once, so
    # their drains overlap instead of adding up.
    for on_nodes in (True, False):
        group = sorted((p for p in state.processes if (p.netns != "") == on_nodes and p.alive()), key=lambda p: p.name)
        for proc in group:
            progress(f"stopping {proc.name} (pid {proc.pid})")
        left += [f"process {p.name} (pid {p.pid})" for p in stop_all(group)]
    _uninstall_agents(state_dir, state, progress)
    _cleanup_pods(state_dir, state, progress)
    pods = _pod_namespaces(state_dir)
    left += network.teardown(pods, max(state.nodes, _node_dirs(state_dir)), progress)
    for d in (state_dir / "nodes").glob("node-*/cni/ipam") if (state_dir / "nodes").exists() else []:
        for f in d.rglob("*"):
            if f.is_file():
                f.unlink()
    if not left:
        (state_dir / STATE_FILE).unlink(missing_ok=True)
    return left


def _node_tool(node: topology.NodePlan, program: str, args: list[str]) -> None:
    subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{node.netns}", "--", str(BIN / program), *args],
        capture_output=True,
        timeout=120,
    )


def _uninstall_agents(state_dir: Path, state: ClusterState, progress: Progress) -> None:
    """Remove the in-pod rules and annotations each node agent installed (after it stopped, so it
    does not capture the pods again)."""
    if not available("mesh-node-agent"):
        return
    for node in topology.nodes(state.nodes) if state.nodes else []:
        ndir = node_dir(state_dir, node)
        if (ndir / "token").exists() and netns.exists(node.netns):
            progress(f"{node.name}: removing in-pod redirection")
            _node_tool(node, "mesh-node-agent", ["--uninstall", "--state-dir", str(ndir)])


def _cleanup_pods(state_dir: Path, state: ClusterState, progress: Progress) -> None:
    """Let each node's runtime stop its pods and release their addresses (CNI DEL), as a kubelet
    would; whatever it cannot do, the namespace removal below still does."""
    if not available("mesh-runtime"):
        return
    cleanups = []  # every node at once: their pods' grace periods overlap
    for node in topology.nodes(max(state.nodes, 1)) if state.nodes else []:
        ndir = node_dir(state_dir, node)
        if not (ndir / "runtime").exists() or not netns.exists(node.netns):
            continue
        progress(f"{node.name}: stopping its pods")
        command = [
            "nsenter",
            f"--net=/var/run/netns/{node.netns}",
            "--",
            str(BIN / "mesh-runtime"),
            "--cleanup",
            "--node",
            node.name,
            "--state-dir",
            str(ndir),
        ]
        cleanups.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for cleanup in cleanups:
        try:
            cleanup.wait(timeout=120)
        except subprocess.TimeoutExpired:
            cleanup.kill()
            cleanup.wait()


def _pod_namespaces(state_dir: Path) -> list[str]:
    """The pod namespaces the nodes' runtimes made (from their records), plus any left by name."""
    names: set[str] = set()
    for record in (state_dir / "nodes").glob("node-*/runtime/pods/*.json") if (state_dir / "nodes").exists() else []:
        try:
            value = json.loads(record.read_text()).get("netns")
        except (OSError, ValueError):
            continue
        if value:
            names.add(Path(value).name)
    return sorted(n for n in names if n.startswith("mesh-pod-"))


def _node_dirs(state_dir: Path) -> int:
    return len(list((state_dir / "nodes").glob("node-*"))) if (state_dir / "nodes").exists() else 0


def status(state_dir: Path) -> dict:
    state = ClusterState.load(state_dir)
    procs = [{"name": p.name, "pid": p.pid, "alive": p.alive(), "netns": p.netns} for p in state.processes]
    return {"nodes": state.nodes, "network": state.network and netns.exists(topology.UNDERLAY_NS), "processes": procs}


def _admin_client(state_dir: Path) -> httpx.Client:
    token = (state_dir / "admin-token").read_text().strip()
    verify = ssl.create_default_context(cafile=str(state_dir / "istiod-ca.pem"))
    return httpx.Client(base_url=ISTIOD, headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=30)


def _https_ready(state_dir: Path) -> bool:
    ca = state_dir / "istiod-ca.pem"
    if not ca.exists():
        return False
    try:
        verify = ssl.create_default_context(cafile=str(ca))
        return httpx.get(f"{ISTIOD}/readyz", verify=verify, timeout=1).status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def _http_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(ready: Callable[[], bool], timeout: float, what: str, proc: Process) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not proc.alive():
            raise network.ClusterError(f"{proc.name} exited while waiting for {what}")
        time.sleep(0.2)
    raise network.ClusterError(f"timed out waiting for {what}")
