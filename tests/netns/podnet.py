"""Pod namespaces for root-only tests of the node agent and the CNI plugin.

Network safety (DESIGN §9): only namespaces these fixtures create (names start with `mesh-t-`),
addresses in 198.18.0.0/15, no default route anywhere, and every namespace, link and process
removed by name or PID in teardown, also when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dataplane.cni.redirect import apply, rules
from dataplane.cni.redirect.iptables_state import differences
from mesh import netns
from tests import harness

RULESET = rules.build()
SERVER = """
import os, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {port}))
s.listen(64)
while True:
    c, _ = s.accept()
    c.sendall(b"server %d\\n" % os.getpid())
    c.close()
"""


def need_root() -> None:
    harness.need("root", os.geteuid() == 0, "network namespaces need root")


def run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"


@dataclass
class PodNet:
    """One pod netns: its name, path, address, and processes started in it."""

    name: str
    ip: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def path(self) -> str:
        return str(netns.path(self.name))

    def start_server(self, port: int) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER.format(port=port)], preexec_fn=netns.enter_in_child(self.name)
        )
        self.procs.append(proc)
        harness.wait_for(lambda: listening(self.name, port), 10, f"server on {self.ip}:{port}", proc=proc)
        return proc


def listening(name: str, port: int) -> bool:
    out = netns.exec_in(name, ["ss", "-Hltn", f"sport = :{port}"]).stdout
    return bool(out.strip())


@contextlib.contextmanager
def pod_pair(subnet: str = "198.18.240") -> Iterator[tuple[PodNet, PodNet]]:
    """Two pod namespaces joined by a veth pair (`eth0` each side), lo up, no default route."""
    tag = secrets.token_hex(3)
    a, b = PodNet(f"mesh-t-{tag}-a", f"{subnet}.2"), PodNet(f"mesh-t-{tag}-b", f"{subnet}.3")
    link_a, link_b = f"mesh-t-{tag}a", f"mesh-t-{tag}b"
    try:
        netns.create(a.name)
        netns.create(b.name)
        run(["ip", "link", "add", link_a, "netns", a.name, "type", "veth", "peer", "name", link_b, "netns", b.name])
        for pod, link in ((a, link_a), (b, link_b)):
            run(["ip", "-n", pod.name, "link", "set", link, "name", "eth0"])
            run(["ip", "-n", pod.name, "addr", "add", f"{pod.ip}/24", "dev", "eth0"])
            run(["ip", "-n", pod.name, "link", "set", "eth0", "up"])
            run(["ip", "-n", pod.name, "link", "set", "lo", "up"])
        yield a, b
    finally:
        for pod in (a, b):
            for proc in pod.procs:
                stop_process(proc)
        for pod in (a, b):
            netns.delete(pod.name)  # takes the veth ends inside with it
        for link in (link_a, link_b):  # only if creation failed half-way in the root namespace
            if Path(f"/sys/class/net/{link}").exists():
                subprocess.run(["ip", "link", "del", link], capture_output=True)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def connect(pod: PodNet, ip: str, port: int, timeout: float = 3.0) -> str:
    """Open a TCP connection from inside `pod` and return the first line the other end sends."""
    sock = netns.socket_in(pod.name)
    with sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def rules_in_sync(pod: PodNet) -> bool:
    """Every rule, the policy rule and the route are installed exactly as desired."""
    return differences(RULESET, apply.inspect(pod.path, RULESET)) == []


def rules_absent(pod: PodNet) -> bool:
    return not apply.inspect(pod.path, RULESET).has_any(RULESET)


def ruleset_dump(pod: PodNet) -> str:
    """`nft -a list ruleset` (with rule handles: a rule deleted and re-added gets a new handle)
    plus the policy routing, for churn checks."""
    nft = netns.exec_in(pod.name, ["nft", "-a", "list", "ruleset"]).stdout
    ip_rules = netns.exec_in(pod.name, ["ip", "-4", "rule", "show"]).stdout
    save = "\n".join(
        line for line in netns.exec_in(pod.name, ["iptables-save"]).stdout.splitlines() if not line.startswith("#")
    )
    return f"{nft}\n{ip_rules}\n{save}"


def wait_until(check, timeout: float, what: str) -> float:
    """Poll `check` until true; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start
