"""One real `waypoint` process against resources a test chooses (test_waypoint.py,
test_waypoint_workload.py, test_waypoint_tracing.py): istiod and mesh-ca for its pod's token and
certificate, the ADS server of waypoint_env.py serving the test's resources, the HBONE backends of
waypoint_env.py, and an HBONE client with sleep's certificate.

The steps are also the pieces test_ingress_gateway.py starts its gateway with (`create_pods`,
`pod_token_file`, `start_ads_server`, `proxy_env`, `start_proxy`, `stop_proxy`, `running_proxy`):
the same binary, with other pods, flags and backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import h11
import httpx
from envoy.service.discovery.v3 import ads_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from dataplane.waypoint.proxy.byte_stream import HboneBytes
from mesh.certs.ca_client import CaClient
from mesh.certs.manager import CertificateManager
from mesh.clock import SystemClock
from mesh.hbone import HboneClient, client_context, server_context
from mesh.kubeclient import Connection, KubeClient
from mesh.sa_tokens import request_pod_token
from tests import harness
from tests.integration.waypoint_env import ECHO, PORT, SLEEP, WAYPOINT, Ads, Backends, http1, start_grpc_server

WP_IP = "127.0.0.4"
WAYPOINT_PODS = (("wp-0", "waypoint"), ("sleep-0", "sleep"), ("echo-0", "echo"))  # (pod, service account)

Starter = Callable[[dict, harness.Istiod, harness.MeshCa, str, Path], Coroutine[Any, Any, None]]


class Loop:
    """An event loop in a thread: `run(coro)` from a test, waiting for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class Running:
    """The waypoint and what the test talks to."""

    loop: Loop
    ads: Ads
    backends: Backends
    ports: dict[str, int]
    client: HboneClient
    log: Path

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return self.loop.run(coro, timeout)

    async def request(
        self, authority: str, host: str, path: str, headers: tuple = (), method: str = "GET"
    ) -> tuple[int, dict, bytes]:
        """One HTTP/1.1 request on a new CONNECT to `authority`: status, headers, body."""
        tunnel = HboneBytes(await self.client.open(authority))
        return await http1(tunnel, h11.Connection(h11.CLIENT), method, path, host, headers)

    async def tunnel(self, vip: str) -> HboneBytes:
        """A new CONNECT to `vip`:PORT."""
        return HboneBytes(await self.client.open(f"{vip}:{PORT}"))

    async def get(self, vip: str, host: str, path: str, headers: tuple = ()) -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.1 GET on a new tunnel."""
        return await http1(await self.tunnel(vip), h11.Connection(h11.CLIENT), "GET", path, host, headers)

    def log_line(self, wanted: Callable[[str], bool], timeout: float = 3.0) -> str:
        """The first line of the waypoint's output that `wanted` accepts, waiting for it: access
        lines are written in batches (dataplane/waypoint/access_log.py)."""
        deadline = time.monotonic() + timeout
        while True:
            line = next((x for x in self.log.read_text().splitlines() if wanted(x)), None)
            if line is not None:
                return line
            if time.monotonic() > deadline:
                raise AssertionError("no such line in the waypoint's log:\n" + self.log.read_text()[-3000:])
            time.sleep(0.02)

    def scrape(self) -> list:
        """The waypoint's `istio_requests_total` samples."""
        text = httpx.get(f"http://{WP_IP}:{self.ports['metrics']}/stats/prometheus").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return [s for s in families["istio_requests"].samples if s.name == "istio_requests_total"]


# --- the steps, shared with test_ingress_gateway.py -----------------------------------------------------


def create_pods(istiod: harness.Istiod, pods: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Create (pod, service account) pods in `default` on node-1; their uids by name."""
    return {name: harness.create_pod(istiod, name, sa) for name, sa in pods}


async def pod_token_file(
    istiod: harness.Istiod, node_token: str, pod: str, service_account: str, uid: str, path: Path
) -> Path:
    """The pod's own token, as mesh-runtime asks for it with its node's token, written to `path`."""
    async with KubeClient(Connection(istiod.url, node_token, str(istiod.ca_file))) as kube:
        pod_token = await request_pod_token(kube, "default", service_account, pod, uid)
    path.write_text(pod_token.token)
    return path


def certificates(ca: harness.MeshCa, node_token: str) -> CertificateManager:
    """A certificate manager asking mesh-ca with the node's token (for workload certificates)."""
    return CertificateManager(lambda: CaClient(ca.address, ca.roots_pem, node_token), SystemClock(), "cluster.local")


async def start_ads_server(ads: Any, ca: harness.MeshCa, port: int) -> grpc.aio.Server:
    """`ads` served on 127.0.0.1:`port` with mesh-xds's serving certificate, client certificates
    required (as mesh-xds does)."""
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    state = ca.state_dir
    creds = grpc.ssl_server_credentials(
        [((state / "xds-key.pem").read_bytes(), (state / "xds-cert.pem").read_bytes())],
        root_certificates=ca.roots_pem,
        require_client_auth=True,
    )
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    await server.start()
    return server


def proxy_env(
    pod: str, service_account: str, ip: str, token_file: Path, ca: harness.MeshCa, ads_port: int
) -> dict[str, str]:
    """The environment mesh-runtime gives a waypoint or gateway pod."""
    return {
        **os.environ,
        "MESH_POD_NAME": pod,
        "MESH_POD_NAMESPACE": "default",
        "MESH_POD_IP": ip,
        "MESH_SERVICE_ACCOUNT": service_account,
        "MESH_TOKEN_FILE": str(token_file),
        "MESH_ROOT_CERT": str(ca.state_dir / "root-cert.pem"),
        "MESH_CA_ADDRESS": ca.address,
        "MESH_XDS_ADDRESS": f"127.0.0.1:{ads_port}",
    }


async def start_proxy(parts: dict, flags: dict[str, Any], env: dict[str, str], log: Path, what: str) -> None:
    """Run the `waypoint` binary with `flags` (parts["proc"], its output in parts["log"]) and wait
    until its readiness port (`--listen-address`, `--readiness-port`) says ready."""
    parts["log"] = log
    proc = parts["proc"] = await asyncio.create_subprocess_exec(
        str(harness.VENV_BIN / "waypoint"),
        *[str(x) for pair in flags.items() for x in pair],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    ready = f"http://{flags['--listen-address']}:{flags['--readiness-port']}/healthz/ready"
    async with httpx.AsyncClient() as web:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await web.get(ready)).status_code == 200:
                    return
            assert proc.returncode is None, log.read_text()[-3000:]
            await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not ready: " + log.read_text()[-3000:])


async def stop_proxy(parts: dict, timeout: float = 15) -> int | None:
    """Close the test's HBONE client (if any) and ask the process to quit on its admin port, which
    listens on 127.0.0.1 (it must drain and exit 0); kill it if it has not exited after `timeout`.
    Its exit code, or None."""
    proc, code = parts.get("proc"), None
    try:
        if "client" in parts:
            parts["client"].close()
        if proc is not None and proc.returncode is None:
            async with httpx.AsyncClient() as web:
                with contextlib.suppress(httpx.HTTPError):
                    await web.post(f"http://127.0.0.1:{parts['ports']['admin']}/quitquitquit")
            with contextlib.suppress(TimeoutError):
                code = await asyncio.wait_for(proc.wait(), timeout)
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
    return code


@contextlib.contextmanager
def running_proxy(
    tmp: Path, start: Starter, stop: Callable[[dict], Coroutine[Any, Any, int | None]]
) -> Iterator[tuple[Loop, dict]]:
    """istiod, mesh-ca, node-1 and a loop thread; `start(parts, istiod, ca, node_token, tmp)` on the
    loop, then the loop and `parts` to the test; on exit `stop(parts)` must return 0."""
    loop = Loop()
    parts: dict = {}
    try:
        with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod) as ca:
            node_token = harness.create_node(istiod, "node-1")
            try:
                loop.run(start(parts, istiod, ca, node_token, tmp), timeout=60)
                yield loop, parts
            finally:
                code = loop.run(stop(parts))
            assert code == 0, parts["log"].read_text()[-3000:]
    finally:
        loop.close()


# --- the waypoint ---------------------------------------------------------------------------------------


async def _start(
    parts: dict,
    istiod: harness.Istiod,
    ca: harness.MeshCa,
    node_token: str,
    tmp: Path,
    *,
    resources: dict,
    backends: type[Backends],
    env: dict[str, str],
    grpc_backend: bool = False,
) -> None:
    """Everything on the loop: certificates, backends (and a gRPC server when `grpc_backend`), the
    ADS server, the waypoint, sleep's HBONE client."""
    ports = {n: harness.free_port() for n in ("hbone", "admin", "metrics", "ready", "backend", "ads", "grpc")}
    parts["ports"] = ports
    uids = create_pods(istiod, WAYPOINT_PODS)
    token_file = await pod_token_file(istiod, node_token, "wp-0", "waypoint", uids["wp-0"], tmp / "wp-token")
    async with certificates(ca, node_token) as certs:
        sleep, echo = await certs.get(SLEEP), await certs.get(ECHO)
    roots = ca.roots_pem
    if grpc_backend:
        parts["grpc_server"] = await start_grpc_server(ports["grpc"])
    parts["backends"] = backends(
        server_context("".join(echo.chain), echo.key_pem, roots), ports["backend"], ports["grpc"]
    )
    await parts["backends"].start()
    ads = parts["ads"] = Ads()
    ads.resources = resources
    parts["ads_server"] = await start_ads_server(ads, ca, ports["ads"])
    flags = {
        "--gateway": "default/wp",
        "--listen-address": WP_IP,
        "--hbone-port": ports["hbone"],
        "--admin-port": ports["admin"],
        "--metrics-port": ports["metrics"],
        "--readiness-port": ports["ready"],
        "--hbone-upstream-port": ports["backend"],
        "--drain-seconds": 1,
    }
    environ = {**proxy_env("wp-0", "waypoint", WP_IP, token_file, ca, ports["ads"]), **env}
    await start_proxy(parts, flags, environ, tmp / "waypoint.log", "waypoint")
    ctx = client_context("".join(sleep.chain), sleep.key_pem, roots)
    parts["client"] = await HboneClient.connect((WP_IP, ports["hbone"]), ctx, expected_identities={str(WAYPOINT)})


async def _stop(parts: dict) -> int | None:
    """Ask the waypoint to quit (it must drain and exit 0), then stop the test's servers."""
    try:
        return await stop_proxy(parts)
    finally:
        if "backends" in parts:
            await parts["backends"].server.close(0.5)
        for name in ("ads_server", "grpc_server"):
            if name in parts:
                await parts[name].stop(0)


@contextlib.contextmanager
def running_waypoint(
    tmp: Path,
    resources: dict,
    *,
    backends: type[Backends] = Backends,
    env: dict[str, str] | None = None,
    grpc_backend: bool = False,
) -> Iterator[Running]:
    """A waypoint serving `resources` (by type URL and name); on exit it must drain and exit 0."""
    how = {"resources": resources, "backends": backends, "env": env or {}, "grpc_backend": grpc_backend}
    with running_proxy(tmp, functools.partial(_start, **how), _stop) as (loop, parts):
        yield Running(loop, parts["ads"], parts["backends"], parts["ports"], parts["client"], parts["log"])
