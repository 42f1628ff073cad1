"""Test harness: real processes (istiod, redis-server) and real databases, cleaned up by PID.

Requirements: a test that needs root, Redis, PostgreSQL or kubectl calls `need(...)`. Where the
thing is missing the test is skipped, except when `.ci/run` listed it in `MESH_REQUIRE` (the
machine has it), where a skip would hide a failure: then the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("MESH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def required() -> set[str]:
    return {r for r in os.environ.get("MESH_REQUIRE", "").replace(",", " ").split() if r}


def need(what: str, available: bool, why: str = "") -> None:
    """Skip when `what` is unavailable, unless CI declared this machine has it: then fail."""
    if available:
        return
    message = f"{what} is not available{': ' + why if why else ''}"
    if what in required():
        pytest.fail(f"{message} (MESH_REQUIRE lists {what})")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


# --- Redis --------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A redis-server of the test's own, on its own port, stoppable and restartable."""

    port: int
    workdir: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server not installed"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open("127.0.0.1", self.port), 10, "redis-server to listen")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[RedisServer]:
    need("redis", shutil.which("redis-server") is not None, "redis-server binary missing")
    server = RedisServer(free_port(), tmp)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- PostgreSQL ---------------------------------------------------------------------------------


def postgres_available() -> bool:
    return port_open("127.0.0.1", 5432)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database, dropped afterwards. Yields its SQLAlchemy URL."""
    need("postgres", postgres_available(), "nothing answers on 127.0.0.1:5432")
    import psycopg

    name = f"mesh_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database(kind: str, state_dir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{state_dir / 'istiod.db'}"
    else:
        with postgres_database() as url:
            yield url


# --- istiod -------------------------------------------------------------------------------------


@dataclass
class Istiod:
    """A running istiod process and what clients need to talk to it."""

    state_dir: Path
    database_url: str
    redis_url: str
    stream: str
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.state_dir / "admin-token").read_text().strip()

    @property
    def reader_token(self) -> str:
        return (self.state_dir / "reader-token").read_text().strip()

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "istiod-ca.pem"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def command(self) -> list[str]:
        return [
            str(VENV_BIN / "istiod"),
            "--state-dir",
            str(self.state_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
            "--database-url",
            self.database_url,
            "--redis-url",
            self.redis_url,
            "--change-stream",
            self.stream,
            *self.extra_args,
        ]

    def start(self, timeout: float = 30) -> None:
        log = (self.state_dir / "istiod.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=ROOT)
        wait_for(self._ready, timeout, "istiod to be ready", proc=self.proc, log=self.state_dir / "istiod.log")
        subprocess.run(
            [str(VENV_BIN / "meshctl"), "kubeconfig", "--state-dir", str(self.state_dir)],
            check=True,
            capture_output=True,
        )

    def _ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError, OSError, ssl.SSLError):
            return httpx.get(f"{self.url}/readyz", verify=False, timeout=1).status_code == 200
        return False

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        verify = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.url, verify=verify, headers=headers, timeout=30, **kw)


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {what}\n{tail}")
        time.sleep(0.05)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


@contextlib.contextmanager
def running_istiod(
    tmp: Path, db: str, redis_url: str | None = None, extra_args: list[str] | None = None
) -> Iterator[Istiod]:
    """istiod on `db` ("sqlite" or "postgres"), stopped afterwards."""
    state = tmp / "istiod-state"
    state.mkdir(parents=True, exist_ok=True)
    with database(db, state) as url:
        node = Istiod(
            state,
            url,
            redis_url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            stream=f"test:changes:{uuid.uuid4().hex[:8]}",
            extra_args=extra_args or [],
        )
        node.start()
        try:
            yield node
        finally:
            node.stop()


# --- mesh-ca ------------------------------------------------------------------------------------


@dataclass
class MeshCa:
    """A running mesh-ca sharing istiod's state directory (as on one machine)."""

    istiod: Istiod
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def state_dir(self) -> Path:
        return self.istiod.state_dir

    @property
    def roots_pem(self) -> bytes:
        return (self.state_dir / "root-cert.pem").read_bytes()

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "ca-audit.log"

    def start(self, timeout: float = 30) -> None:
        log = self.state_dir / "mesh-ca.log"
        cmd = [
            str(VENV_BIN / "mesh-ca"),
            "--state-dir",
            str(self.state_dir),
            "--listen",
            self.address,
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(lambda: port_open("127.0.0.1", self.port), timeout, "mesh-ca to listen", proc=self.proc, log=log)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@contextlib.contextmanager
def running_ca(istiod: Istiod, extra_args: list[str] | None = None) -> Iterator[MeshCa]:
    ca = MeshCa(istiod, extra_args=extra_args or [])
    ca.start()
    try:
        yield ca
    finally:
        ca.stop()


def create_node(istiod: Istiod, name: str) -> str:
    """Register a Node through the API; returns its token (given once, in the create response)."""
    with istiod.client() as client:
        response = client.post("/api/v1/nodes", json={"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
        assert response.status_code == 201, response.text
        return response.json()["metadata"]["annotations"]["mesh.istio.io/node-token"]


def pod_body(name: str, sa: str, node: str, ns: str = "default") -> dict:
    """A Pod of service account `sa` bound to `node`, as a scheduler would leave it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"serviceAccountName": sa, "nodeName": node, "containers": [{"name": "c"}]},
    }


def create_pod(istiod: Istiod, name: str, sa: str, node: str = "node-1", ns: str = "default") -> str:
    """Create the pod through the API (it must be created); returns its uid."""
    with istiod.client() as client:
        response = client.post(f"/api/v1/namespaces/{ns}/pods", json=pod_body(name, sa, node, ns))
        assert response.status_code == 201, response.text
        return response.json()["metadata"]["uid"]


# --- mesh-xds -----------------------------------------------------------------------------------


@dataclass
class MeshXds:
    """A running mesh-xds sharing istiod's (and mesh-ca's) state directory."""

    istiod: Istiod
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    mtls_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def mtls_address(self) -> str:
        """The port that requires a workload certificate (proxyless gRPC clients, waypoints)."""
        return f"127.0.0.1:{self.mtls_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 30) -> None:
        state = self.istiod.state_dir
        log = state / "mesh-xds.log"
        cmd = [
            str(VENV_BIN / "mesh-xds"),
            "--state-dir",
            str(state),
            "--listen",
            self.address,
            "--admin-listen",
            f"127.0.0.1:{self.admin_port}",
            "--mtls-listen",
            self.mtls_address,
            "--change-stream",
            self.istiod.stream,
            "--redis-url",
            self.istiod.redis_url,
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.admin}/readyz", timeout=1).status_code == 200
            return False

        wait_for(ready, timeout, "mesh-xds to be ready", proc=self.proc, log=log)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def syncz(self) -> list[dict]:
        return httpx.get(f"{self.admin}/debug/syncz", timeout=5).json()


@contextlib.contextmanager
def running_xds(istiod: Istiod, extra_args: list[str] | None = None) -> Iterator[MeshXds]:
    xds = MeshXds(istiod, extra_args=extra_args or [])
    xds.start()
    try:
        yield xds
    finally:
        xds.stop()


# --- mesh-worker --------------------------------------------------------------------------------


@contextlib.contextmanager
def running_worker(istiod: Istiod) -> Iterator[subprocess.Popen]:
    """mesh-worker taking jobs from istiod's Redis, writing with the admin token."""
    log = istiod.state_dir / "mesh-worker.log"
    cmd = [str(VENV_BIN / "mesh-worker"), "--state-dir", str(istiod.state_dir), "--redis-url", istiod.redis_url]
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_for(lambda: "ready" in log.read_text(), 30, "mesh-worker to be ready", proc=proc, log=log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
