"""The fault suite, as root, on a real 2-node netns cluster: `kill -9` of each control-plane
process and of Redis in turn, under steady traffic, with a configuration change made during each
outage.

One cluster for the module, on a Redis of the test's own (tests/harness.redis_server, a free
loopback port), so killing Redis kills only ours. In namespace `faults` (labelled ambient):
`client` on node-1 and `server` on node-2 (the sample app), and one probe pod per victim on
node-1 (`probe-istiod`, `probe-xds`, ...), each with its own service account. Under steady
traffic, a long-lived EchoStream from client to server plus a new connection and one GET every
200 ms, for each victim in turn:

1. `kill -9` its PID (from `{state}/cluster.json`, or our redis-server's);
2. while it is down, create an AuthorizationPolicy that DENIES that victim's probe (and nothing
   else) through the API; for istiod itself the change is made right after it comes back;
3. restart it (`meshctl cluster up`, idempotent, or redis-server on the same port);
4. measure the convergence time: from the restart being issued to the policy being in force on
   the data plane (node-2's ztunnel config_dump lists it, the probe is denied and the client still
   allowed), and to its ZtunnelAccepted status condition (mesh-xds computes it, mesh-worker
   writes it).

The last test asserts what a user relies on across the whole run: the EchoStream never failed,
not one of the client's new connections failed, every policy is still stored (also after one more
`kill -9` of istiod: SQLite must lose nothing acknowledged) and still in force; it prints the
table of convergence times and writes it as JSON to the pytest tmp dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from mesh import netns
from tests import harness
from tests.e2e import meshops as ops
from tests.e2e.test_cluster import api, leftovers, meshctl, wait_running

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

NS = "faults"
SERVER_NODE_IP = "198.19.255.12"  # node-2: where the server's inbound policy is enforced
NODE_IPS = ("198.19.255.11", SERVER_NODE_IP)
VICTIMS = ("istiod", "mesh-xds", "mesh-ca", "mesh-worker", "redis")
PODS = {  # name: (node, service account)
    "client": ("node-1", "client"),
    "server": ("node-2", "server"),
    **{f"probe-{v.removeprefix('mesh-')}": ("node-1", f"probe-{v.removeprefix('mesh-')}") for v in VICTIMS},
}
OUTAGE = 2.0  # seconds each victim stays dead, under traffic
CONVERGE_TIMEOUT = 30.0


def probe_of(victim: str) -> str:
    return f"probe-{victim.removeprefix('mesh-')}"


@dataclass
class Traffic:
    """New connections from the client, one GET every `interval` seconds, until stopped."""

    get: object  # () -> dict | None
    interval: float = 0.2
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = self.started + 900  # bounded even if the fixture never stops us
        while not self._stop.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            self.attempts += 1
            if self.get() is None:  # type: ignore[operator]
                self.failures.append(f"GET {self.attempts} at {began - self.started:.1f}s failed")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


@dataclass
class Faults:
    state: Path
    redis: harness.RedisServer
    pods: dict[str, dict]
    stream: ops.EchoStream
    traffic: Traffic
    results: dict[str, dict] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)  # victim: API path of its policy

    def ip(self, name: str) -> str:
        return self.pods[name]["status"]["podIP"]

    def get(self, source: str) -> dict | None:
        return ops.http_get(self.pods[source], self.ip("server"), timeout=3)

    def processes(self) -> dict[str, int]:
        raw = json.loads((self.state / "cluster.json").read_text())
        return {p["name"]: p["pid"] for p in raw["processes"]}

    def up(self) -> None:
        """`meshctl cluster up` again: starts whatever is not running, with our Redis."""
        subprocess.run(
            [str(harness.VENV_BIN / "meshctl"), "cluster", "up", "--nodes", "2", "--state-dir", str(self.state)],
            check=True,
            capture_output=True,
            timeout=180,
            env={**os.environ, "REDIS_URL": self.redis.url},
        )

    def api(self) -> httpx.Client:
        return api(self.state)


def _kill_9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    ops.wait(lambda: _gone(pid), 10, f"pid {pid} to die")


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "zombie" in status.lower()


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _create_pods(client: httpx.Client) -> dict[str, dict]:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NS, "labels": {"istio.io/dataplane-mode": "ambient"}},
    }
    client.post("/api/v1/namespaces", json=namespace).raise_for_status()
    for name, (node, sa) in PODS.items():
        body = ops.app_pod(name, node, sa, name, NS)
        client.post(f"/api/v1/namespaces/{NS}/pods", json=body).raise_for_status()
    return {name: wait_running(client, NS, name) for name in PODS}


def _on_hbone(count: int) -> bool:
    for ip in NODE_IPS:
        workloads = [w for w in ops.config_dump(ip)["workloads"] if w["namespace"] == NS]
        if len(workloads) < count or any(w["protocol"] != "HBONE" for w in workloads):
            return False
    return True


def _check_uses_private_redis(state: Path, server: harness.RedisServer) -> None:
    """The control plane talks to our redis-server, not the machine's: the URL in each process's
    environment, and istiod's change stream with the namespace we just made in it."""
    procs = {p["name"]: p["pid"] for p in json.loads((state / "cluster.json").read_text())["processes"]}
    for name in ("istiod", "mesh-xds", "mesh-worker"):
        assert _environ(procs[name]).get("REDIS_URL") == server.url, f"{name} does not use {server.url}"
    with redis.Redis(port=server.port) as r:
        entries = r.xrange("mesh:changes")
        assert any(e[1].get(b"name") == NS.encode() for e in entries), "our Redis has no change for the namespace"
        assert len(r.client_list()) >= 3  # istiod's relay, mesh-xds's consumer, mesh-worker (and us)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    harness.need("root", os.geteuid() == 0)
    if netns.exists("mesh-underlay"):
        pytest.skip("a cluster is already up on this machine (meshctl cluster down first)")
    state = tmp_path_factory.mktemp("fcluster")
    stream = traffic = None
    with harness.redis_server(tmp_path_factory.mktemp("fredis")) as server:
        try:
            subprocess.run(
                [str(harness.VENV_BIN / "meshctl"), "cluster", "up", "--nodes", "2", "--state-dir", str(state)],
                check=True,
                capture_output=True,
                timeout=180,
                env={**os.environ, "REDIS_URL": server.url},
            )
            with api(state) as client:
                pods = _create_pods(client)
            ops.wait(lambda: _on_hbone(len(PODS)), 30, "both ztunnels to see the pods on HBONE")
            _check_uses_private_redis(state, server)
            faults = Faults(state, server, pods, None, None)  # type: ignore[arg-type]
            ops.wait(lambda: all(faults.get(p) for p in PODS if p != "server"), 20, "every pod to reach the server")
            sock = ops.connect(pods["client"], faults.ip("server"), ops.ECHO_PORT)
            stream = faults.stream = ops.EchoStream(sock, interval=0.2).start()
            traffic = faults.traffic = Traffic(lambda: faults.get("client")).start()
            yield faults
        finally:
            for running in (stream, traffic):
                if running is not None:
                    running.stop()
            down = meshctl("cluster", "down", "--state-dir", str(state), check=False)
            assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers() == {"netns": [], "etc_netns": [], "links": [], "routes": []}
    assert not subprocess.run(["pgrep", "-f", str(state)], capture_output=True).stdout, "processes left behind"


def _deny_probe(client: httpx.Client, victim: str) -> str:
    """An AuthorizationPolicy denying `victim`'s probe (only) on the server; its API path."""
    name = f"deny-{probe_of(victim)}"
    body = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": "server"}},
            "action": "DENY",
            "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/{NS}/sa/{probe_of(victim)}"]}}]}],
        },
    }
    client.post(f"{ops.SECURITY}/{NS}/authorizationpolicies", json=body).raise_for_status()
    return f"{ops.SECURITY}/{NS}/authorizationpolicies/{name}"


def _in_force(f: Faults, victim: str) -> bool:
    """node-2's ztunnel has the policy, the probe is denied and the client still allowed."""
    keys = {p["key"] for p in ops.config_dump(SERVER_NODE_IP)["policies"]}
    if f"{NS}/deny-{probe_of(victim)}" not in keys:
        return False
    return f.get(probe_of(victim)) is None and f.get("client") is not None


def _accepted(client: httpx.Client, path: str) -> bool:
    response = client.get(path)
    if response.status_code != 200:
        return False
    conditions = (response.json().get("status") or {}).get("conditions") or []
    return any(c["type"] == "ZtunnelAccepted" and c["status"] == "True" for c in conditions)


def _api_down(f: Faults) -> bool:
    try:
        with f.api() as client:
            client.get("/readyz", timeout=1)
    except httpx.HTTPError:
        return True
    return False


def _kill(f: Faults, victim: str) -> None:
    if victim == "redis":
        assert f.redis.proc is not None
        _kill_9(f.redis.proc.pid)
        f.redis.proc.wait(5)
        f.redis.proc = None
    else:
        _kill_9(f.processes()[victim])


def _restart(f: Faults, victim: str) -> None:
    if victim == "redis":
        f.redis.start()  # same port, empty (no persistence): the stream and the queues are gone
    else:
        f.up()


def _checks(f: Faults, victim: str, client: httpx.Client) -> dict[str, Callable[[], bool]]:
    """What convergence means: the policy in force on the data plane, and its ZtunnelAccepted
    condition written (mesh-xds computes it, mesh-worker writes it through the API)."""
    return {"data_plane": lambda: _in_force(f, victim), "condition": lambda: _accepted(client, f.policies[victim])}


def _converge(checks: dict[str, Callable[[], bool]], victim: str, restarted: float) -> dict[str, float]:
    """Seconds from the restart being issued to each check first passing, polled together so
    neither waits for the other."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while len(seen) < len(checks) and time.monotonic() < deadline:
        for what, check in checks.items():
            if what not in seen and check():
                seen[what] = time.monotonic() - restarted
        time.sleep(0.05)
    missing = set(checks) - set(seen)
    assert not missing, f"{victim}: {missing} not converged {CONVERGE_TIMEOUT}s after the restart"
    return seen


@pytest.mark.parametrize("victim", VICTIMS)
def test_kill_9_then_restart_converges_without_breaking_traffic(faults: Faults, victim: str) -> None:
    f = faults
    failures_before = len(f.traffic.failures)
    early: dict[str, bool] = {}
    _kill(f, victim)
    killed = time.monotonic()
    try:
        with f.api() as client:
            if victim == "istiod":
                assert ops.wait(lambda: _api_down(f), 5, "the API to be down")
            else:  # the API is up: the change is made during the outage
                f.policies[victim] = _deny_probe(client, victim)
                time.sleep(max(0.0, OUTAGE - (time.monotonic() - killed)))
                # What already converged while the victim was down (Redis down does not stop the
                # data plane: mesh-xds lists istiod again on every reconnect attempt).
                early = {what: check() for what, check in _checks(f, victim, client).items()}
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - killed)))
        if victim == "mesh-xds":
            assert not early["data_plane"], "mesh-xds is down, yet the change reached ztunnel"
        if victim == "mesh-worker":
            assert not early["condition"], "mesh-worker is down, yet the condition was written"
    finally:
        outage = time.monotonic() - killed
        restarted = time.monotonic()
        _restart(f, victim)
        back = time.monotonic() - restarted
    with f.api() as client:  # a new connection: the old one may have been to the dead istiod
        if victim == "istiod":
            f.policies[victim] = _deny_probe(client, victim)  # right after it came back
        pending = {k: c for k, c in _checks(f, victim, client).items() if not early.get(k)}
        times = {k: 0.0 for k in early if early[k]} | _converge(pending, victim, restarted)
    f.results[victim] = {
        "outage_s": round(outage, 2),
        "restart_s": round(back, 2),
        **{f"{k}_s": round(times[k], 2) for k in ("data_plane", "condition")},
    }
    print(f"{victim}: {f.results[victim]}")
    assert f.stream.failures == [], f.stream.failures
    assert f.traffic.failures[failures_before:] == [], f.traffic.failures[failures_before:]


def test_nothing_was_lost_and_traffic_never_failed(faults: Faults, tmp_path_factory: pytest.TempPathFactory) -> None:
    f = faults
    assert set(f.results) == set(VICTIMS), f"some fault steps did not complete: {sorted(f.results)}"
    with f.api() as client:
        stored = {p: client.get(p).json()["metadata"]["resourceVersion"] for p in f.policies.values()}
    _kill_9(f.processes()["istiod"])  # acknowledged writes survive a kill -9 (SQLite, WAL)
    f.up()
    with f.api() as client:
        for path, version in stored.items():
            response = client.get(path)
            assert response.status_code == 200, f"{path} lost after kill -9 of istiod"
            assert response.json()["metadata"]["resourceVersion"] == version
    keys = {p["key"] for p in ops.config_dump(SERVER_NODE_IP)["policies"]}
    for victim in VICTIMS:
        assert f"{NS}/deny-{probe_of(victim)}" in keys
        assert f.get(probe_of(victim)) is None, f"{probe_of(victim)} is no longer denied"
    assert f.get("client") is not None
    rounds = f.stream.rounds
    ops.wait(lambda: f.stream.rounds > rounds, 5, "the echo stream to keep flowing")
    assert f.stream.failures == [], f.stream.failures
    assert f.traffic.failures == [], f.traffic.failures
    assert f.traffic.attempts > 100  # the loop really ran through the whole suite

    lines = [f"{'killed':<12} {'outage s':>9} {'restart s':>10} {'data plane s':>13} {'condition s':>12}"]
    for victim, r in f.results.items():
        lines.append(
            f"{victim:<12} {r['outage_s']:>9.2f} {r['restart_s']:>10.2f} {r['data_plane_s']:>13.2f}"
            f" {r['condition_s']:>12.2f}"
        )
    lines.append("(times from the restart being issued; 0.00: already converged while the process was down)")
    lines.append(f"echo stream: {f.stream.rounds} rounds, 0 failures; new connections: {f.traffic.attempts}, 0 failed")
    out = tmp_path_factory.mktemp("faults") / "convergence.json"
    out.write_text(
        json.dumps(
            {"convergence": f.results, "echo_rounds": f.stream.rounds, "new_connections": f.traffic.attempts}, indent=2
        )
    )
    print("\n" + "\n".join(lines) + f"\nconvergence times written to {out}")
