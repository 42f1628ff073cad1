"""A one-node test bed for mesh-runtime: a node netns of the test's own, a node directory, an
istiod reachable from inside the node netns, and mesh-runtime started (and killed) in it.

Network safety (DESIGN §9): the node namespace is named `mesh-t-…`, pods get addresses from
198.18.200.0/24 on the node's own bridge, no namespace gets a default route, and teardown removes
every namespace and process by name or PID, also when a test failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.cluster import topology
from mesh import netns
from tests import harness

POD_SUBNET = "198.18.200.0/24"
POD_GATEWAY = "198.18.200.1"
NODE_IP = "198.19.254.11"  # reported as the node's InternalIP only; no link carries it
NAMESPACE = "default"


class Forwarder:
    """Listens on 127.0.0.1:PORT inside the node netns and relays each connection to the root
    namespace's 127.0.0.1:PORT, where istiod listens: no link or address is needed for the node
    to reach the API, and istiod's certificate (issued for 127.0.0.1) still verifies."""

    def __init__(self, node_ns: str, port: int):
        self.port = port
        self.listener = netns.socket_in(node_ns)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                conn.close()
                continue
            conn.settimeout(None)
            upstream.settimeout(None)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            with contextlib.suppress(OSError):
                src.close()
                dst.close()

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.thread.join(5)


@dataclass
class Node:
    """The node: its netns, directory and mesh-runtime process."""

    istiod: harness.Istiod
    dir: Path
    name: str
    netns: str
    proc: subprocess.Popen | None = None
    extra_args: list[str] = field(default_factory=list)
    pod_uids: set[str] = field(default_factory=set)

    @property
    def log(self) -> Path:
        return self.dir / "mesh-runtime.log"

    @property
    def records(self) -> Path:
        return self.dir / "runtime" / "pods"

    @property
    def ipam_dir(self) -> Path:
        return self.dir / "cni" / "ipam" / "mesh"

    def start_runtime(self) -> None:
        """mesh-runtime in the node, with short back-off, grace cap and heartbeat for tests."""
        command = self.runtime_command(
            "--node",
            self.name,
            "--backoff-base",
            "0.5",
            "--backoff-max",
            "4",
            "--grace-max",
            "10",
            "--heartbeat-interval",
            "1",
            *self.extra_args,
        )
        mark = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=harness.ROOT)
        harness.wait_for(lambda: self.logged("ready", mark), 30, "mesh-runtime to be ready", self.proc, self.log)

    def logged(self, message: str, offset: int = 0) -> bool:
        """Whether mesh-runtime logged a line with this `msg` after byte `offset` of its log."""
        with self.log.open("rb") as f:
            f.seek(offset)
            for line in f:
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("msg") == message:
                        return True
        return False

    def runtime_command(self, *args: str) -> list[str]:
        """mesh-runtime inside the node's network namespace only (nsenter --net: the mount
        namespace is shared, so pod namespaces stay visible to everyone; `ip netns exec` would
        hide them, see dataplane/runtime/sandbox.py)."""
        binary = str(harness.VENV_BIN / "mesh-runtime")
        return ["nsenter", f"--net={netns.path(self.netns)}", "--", binary, "--state-dir", str(self.dir), *args]

    def kill_runtime(self, sig: int = signal.SIGKILL) -> int | None:
        """Stop mesh-runtime with `sig`; its exit code."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                code = self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        self.proc = None
        return code

    # --- the API ---------------------------------------------------------------------------------

    def create_pod(self, name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"nodeName": self.name, "containers": containers, **spec},
        }
        with self.istiod.client() as client:
            response = client.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json=body)
        assert response.status_code == 201, response.text
        pod = response.json()
        self.pod_uids.add(pod["metadata"]["uid"])
        return pod

    def pod(self, name: str) -> dict[str, Any] | None:
        with self.istiod.client() as client:
            response = client.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
        return response.json() if response.status_code == 200 else None

    def delete_pod(self, name: str) -> None:
        with self.istiod.client() as client:
            response = client.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
        assert response.status_code in (200, 202), response.text

    def wait_pod(self, name: str, check, what: str, timeout: float = 30) -> dict[str, Any]:
        """Poll the pod until `check(pod)` holds; the pod then."""
        seen: dict[str, Any] = {}

        def ok() -> bool:
            pod = self.pod(name)
            seen["pod"] = pod
            return pod is not None and bool(check(pod))

        try:
            harness.wait_for(ok, timeout, f"pod {name}: {what}", self.proc, self.log)
        except AssertionError as e:
            raise AssertionError(f"{e}\nlast seen: {json.dumps((seen.get('pod') or {}).get('status'))}") from None
        return seen["pod"]

    # --- teardown --------------------------------------------------------------------------------

    def kill_pods(self) -> None:
        """Kill every recorded container process (by PID, checked against its start time)."""
        for path in self.records.glob("*.json") if self.records.exists() else []:
            with contextlib.suppress(ValueError, OSError):
                record = json.loads(path.read_text())
                for c in record.get("containers", []):
                    if c.get("pid") and start_ticks(c["pid"]) == c.get("startTicks"):
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(c["pid"], signal.SIGKILL)


def start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def pod_netns(uid: str) -> str:
    return "mesh-pod-" + uid.replace("-", "")[:12]


def conflist(node_dir: Path) -> dict[str, Any]:
    """The cluster's chain without its last plugin: the test does not depend on istio-cni."""
    chain = topology.pod_conflist(POD_SUBNET, POD_GATEWAY, str(node_dir))
    return {**chain, "plugins": chain["plugins"][:1]}


def write_node_dir(node_dir: Path, name: str, token: str, istiod: harness.Istiod) -> None:
    """The node directory of docs/cluster.md."""
    (node_dir / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    token_path = node_dir / "token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    info = {
        "name": name,
        "ip": NODE_IP,
        "pod_cidr": POD_SUBNET,
        "istiod": istiod.url,
        "istiod_ca_file": str(istiod.ca_file),
    }
    (node_dir / "node.json").write_text(json.dumps(info))
    (node_dir / "cni" / "net.d" / "10-mesh.conflist").write_text(json.dumps(conflist(node_dir)))


@contextlib.contextmanager
def node_netns() -> Iterator[str]:
    """A node namespace of our own (loopback up, no routes), deleted afterwards."""
    name = f"mesh-t-{secrets.token_hex(4)}"
    netns.create(name)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        netns.delete(name)


@contextlib.contextmanager
def running_node(istiod: harness.Istiod, tmp: Path) -> Iterator[Node]:
    """A registered node with mesh-runtime running in its netns; everything removed afterwards."""
    name = f"rt-{secrets.token_hex(3)}"
    token = harness.create_node(istiod, name)
    node_dir = tmp / "node"
    write_node_dir(node_dir, name, token, istiod)
    with node_netns() as ns:
        forwarder = Forwarder(ns, istiod.port)
        node = Node(istiod, node_dir, name, ns)
        try:
            node.start_runtime()
            yield node
        finally:
            node.kill_runtime()
            node.kill_pods()
            for uid in node.pod_uids:
                netns.delete(pod_netns(uid))
            forwarder.stop()
