"""One real `waypoint` process against resources a test chooses (test_waypoint_workload.py,
test_waypoint_tracing.py): istiod and mesh-ca for its pod's token and certificate, the ADS server
of waypoint_env.py serving the test's resources, the HBONE backends of waypoint_env.py, and an
HBONE client with sleep's certificate. The same steps as test_waypoint.py's fixture, with the
resources, the backends and extra environment (tracing) given by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import h11
import httpx
from envoy.service.discovery.v3 import ads_pb2_grpc

from dataplane.waypoint.proxy.byte_stream import HboneBytes
from mesh.certs.ca_client import CaClient
from mesh.certs.manager import CertificateManager
from mesh.clock import SystemClock
from mesh.hbone import HboneClient, client_context, server_context
from mesh.kubeclient import Connection, KubeClient
from mesh.sa_tokens import request_pod_token
from tests import harness
from tests.integration.waypoint_env import ECHO, SLEEP, WAYPOINT, Ads, Backends, http1

WP_IP = "127.0.0.4"


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


def _create_pods(istiod: harness.Istiod) -> dict[str, str]:
    uids = {}
    with istiod.client() as client:
        for name, sa in (("wp-0", "waypoint"), ("sleep-0", "sleep"), ("echo-0", "echo")):
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"serviceAccountName": sa, "nodeName": "node-1", "containers": [{"name": "c"}]},
            }
            response = client.post("/api/v1/namespaces/default/pods", json=body)
            assert response.status_code == 201, response.text
            uids[name] = response.json()["metadata"]["uid"]
    return uids


async def _start(parts: dict, istiod: harness.Istiod, ca: harness.MeshCa, node_token: str, tmp: Path, **how) -> None:
    ports = {n: harness.free_port() for n in ("hbone", "admin", "metrics", "ready", "backend", "ads", "grpc")}
    uids = _create_pods(istiod)
    async with KubeClient(Connection(istiod.url, node_token, str(istiod.ca_file))) as kube:
        pod_token = await request_pod_token(kube, "default", "waypoint", "wp-0", uids["wp-0"])
    token_file = tmp / "wp-token"
    token_file.write_text(pod_token.token)
    certs = CertificateManager(lambda: CaClient(ca.address, ca.roots_pem, node_token), SystemClock(), "cluster.local")
    async with certs:
        sleep, echo = await certs.get(SLEEP), await certs.get(ECHO)
    roots = ca.roots_pem
    backends = how["backends"](
        server_context("".join(echo.chain), echo.key_pem, roots), ports["backend"], ports["grpc"]
    )
    await backends.start()
    parts.update(backends=backends, ports=ports)
    ads = Ads()
    ads.resources = how["resources"]
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    state = ca.state_dir
    creds = grpc.ssl_server_credentials(
        [((state / "xds-key.pem").read_bytes(), (state / "xds-cert.pem").read_bytes())],
        root_certificates=roots,
        require_client_auth=True,
    )
    server.add_secure_port(f"127.0.0.1:{ports['ads']}", creds)
    await server.start()
    parts.update(ads=ads, ads_server=server)
    env = {
        **os.environ,
        "MESH_POD_NAME": "wp-0",
        "MESH_POD_NAMESPACE": "default",
        "MESH_POD_IP": WP_IP,
        "MESH_SERVICE_ACCOUNT": "waypoint",
        "MESH_TOKEN_FILE": str(token_file),
        "MESH_ROOT_CERT": str(state / "root-cert.pem"),
        "MESH_CA_ADDRESS": ca.address,
        "MESH_XDS_ADDRESS": f"127.0.0.1:{ports['ads']}",
        **how["env"],
    }
    log = tmp / "waypoint.log"
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
    proc = await asyncio.create_subprocess_exec(
        str(harness.VENV_BIN / "waypoint"),
        *[str(x) for pair in flags.items() for x in pair],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    parts.update(proc=proc, log=log)
    async with httpx.AsyncClient() as web:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await web.get(f"http://{WP_IP}:{ports['ready']}/healthz/ready")).status_code == 200:
                    break
            assert proc.returncode is None, log.read_text()[-3000:]
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("waypoint not ready: " + log.read_text()[-3000:])
    ctx = client_context("".join(sleep.chain), sleep.key_pem, roots)
    parts["client"] = await HboneClient.connect((WP_IP, ports["hbone"]), ctx, expected_identities={str(WAYPOINT)})


async def _stop(parts: dict) -> int | None:
    """Ask the waypoint to quit (it must drain and exit 0), then stop the test's servers."""
    proc = parts.get("proc")
    code = None
    try:
        if "client" in parts:
            parts["client"].close()
        if proc is not None and proc.returncode is None:
            async with httpx.AsyncClient() as web:
                with contextlib.suppress(httpx.HTTPError):
                    await web.post(f"http://{WP_IP}:{parts['ports']['admin']}/quitquitquit")
            with contextlib.suppress(TimeoutError):
                code = await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        if "backends" in parts:
            await parts["backends"].server.close(0.5)
        if "ads_server" in parts:
            await parts["ads_server"].stop(0)
    return code


@contextlib.contextmanager
def running_waypoint(
    tmp: Path, resources: dict, *, backends: type[Backends] = Backends, env: dict[str, str] | None = None
) -> Iterator[Running]:
    """A waypoint serving `resources` (by type URL and name); on exit it must drain and exit 0."""
    loop = Loop()
    parts: dict = {}
    try:
        with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod) as ca:
            node_token = harness.create_node(istiod, "node-1")
            how = {"resources": resources, "backends": backends, "env": env or {}}
            try:
                loop.run(_start(parts, istiod, ca, node_token, tmp, **how), timeout=60)
                yield Running(loop, parts["ads"], parts["backends"], parts["ports"], parts["client"], parts["log"])
            finally:
                code = loop.run(_stop(parts))
            assert code == 0, parts["log"].read_text()[-3000:]
    finally:
        loop.close()
