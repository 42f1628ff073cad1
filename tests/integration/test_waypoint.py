"""The waypoint process end to end on loopback: one real `waypoint` subprocess for the module,
with its certificate from a real mesh-ca for the service-account token istiod's TokenRequest API
gives its pod (as mesh-runtime asks for it), Envoy resources from an ADS server in the test (mTLS
with mesh-xds's serving certificate, the waypoint's client certificate required), backends that
are real HBONE servers (waypoint_env.py) and a client speaking HBONE with sleep's certificate.

The asyncio side (ADS server, backends, clients) lives on one event loop in a thread, so every
test drives the same running waypoint; the last step of the module asks it to quit and checks
that it drains and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import h11
import httpx
import pytest
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
from tests.integration.waypoint_env import (
    DELAY,
    ECHO,
    FLAKY,
    HOST,
    JWT_HOST,
    JWT_VIP,
    L7_HOST,
    L7_VIP,
    OTHER_KEY,
    PORT,
    SLEEP,
    TIMEOUT,
    V2,
    VIP,
    WAYPOINT,
    Ads,
    Backends,
    grpc_call,
    http1,
    http2,
    start_grpc_server,
    token,
)

pytestmark = pytest.mark.integration
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
class World:
    loop: Loop
    ads: Ads
    backends: Backends
    ports: dict[str, int]
    client: HboneClient
    log: Path

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return self.loop.run(coro, timeout)

    async def tunnel(self, vip: str) -> HboneBytes:
        return HboneBytes(await self.client.open(f"{vip}:{PORT}"))

    async def get(self, vip: str, host: str, path: str, headers: tuple = ()) -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.1 GET on a new tunnel."""
        return await http1(await self.tunnel(vip), h11.Connection(h11.CLIENT), "GET", path, host, headers)

    def scrape(self) -> list:
        text = httpx.get(f"http://{WP_IP}:{self.ports['metrics']}/stats/prometheus").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return [s for s in families["istio_requests"].samples if s.name == "istio_requests_total"]


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


async def _start(loop_world: dict, istiod: harness.Istiod, ca: harness.MeshCa, node_token: str, tmp: Path) -> None:
    """Everything on the loop: certificates, backends, the ADS server, the waypoint."""
    ports = {n: harness.free_port() for n in ("hbone", "admin", "metrics", "ready", "backend", "ads", "grpc")}
    uids = _create_pods(istiod)
    # The waypoint's own token, as mesh-runtime asks for it with its node's token.
    async with KubeClient(Connection(istiod.url, node_token, str(istiod.ca_file))) as kube:
        pod_token = await request_pod_token(kube, "default", "waypoint", "wp-0", uids["wp-0"])
    token_file = tmp / "wp-token"
    token_file.write_text(pod_token.token)
    certs = CertificateManager(lambda: CaClient(ca.address, ca.roots_pem, node_token), SystemClock(), "cluster.local")
    async with certs:
        sleep, echo = await certs.get(SLEEP), await certs.get(ECHO)
    roots = ca.roots_pem
    grpc_server = await start_grpc_server(ports["grpc"])
    backends = Backends(server_context("".join(echo.chain), echo.key_pem, roots), ports["backend"], ports["grpc"])
    await backends.start()
    ads = Ads()
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
    loop_world.update(
        proc=proc, grpc_server=grpc_server, ads_server=server, backends=backends, ads=ads, ports=ports, log=log
    )
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
    loop_world["client"] = await HboneClient.connect((WP_IP, ports["hbone"]), ctx, expected_identities={str(WAYPOINT)})


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
                code = await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        if "backends" in parts:
            await parts["backends"].server.close(0.5)
        for name in ("ads_server", "grpc_server"):
            if name in parts:
                await parts[name].stop(0)
    return code


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("waypoint")
    loop = Loop()
    parts: dict = {}
    try:
        with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod) as ca:
            node_token = harness.create_node(istiod, "node-1")
            try:
                loop.run(_start(parts, istiod, ca, node_token, tmp), timeout=60)
                yield World(loop, parts["ads"], parts["backends"], parts["ports"], parts["client"], parts["log"])
            finally:
                code = loop.run(_stop(parts))
            assert code == 0, parts["log"].read_text()[-3000:]
    finally:
        loop.close()


def test_rbac_split_http2_and_no_chain(world: World) -> None:
    assert world.ads.nodes[0] == f"waypoint~{WP_IP}~wp-0.default~default.svc.cluster.local"
    assert not world.ads.nacks

    async def scenario() -> None:
        tunnel = await world.tunnel(VIP)
        conn = h11.Connection(h11.CLIENT)
        assert (await http1(tunnel, conn, "GET", "/hello", HOST))[::2] == (200, b"v1")
        assert (await http1(tunnel, conn, "DELETE", "/hello", HOST))[::2] == (403, b"RBAC: access denied")
        seen = Counter([(await http1(tunnel, conn, "GET", "/split", HOST))[2] for _ in range(200)])
        assert seen[b"v1"] + seen[b"v2"] == 200
        assert 160 <= seen[b"v1"] <= 195, seen  # 90 % of 200 = 180; binomial sd ~4.2
        headers, body, _ = await http2(await world.tunnel(VIP), "GET", "/over-h2", HOST)
        assert (headers[":status"], body) == ("200", b"v1")
        with pytest.raises(Exception, match="503"):
            await world.client.open("10.96.0.99:80")  # no filter chain: 503 at CONNECT

    world.run(scenario())
    samples = [s for s in world.scrape() if s.labels["destination_service"] == HOST]
    denied = [s for s in samples if s.labels["response_code"] == "403"]
    assert denied and denied[0].value == 1
    assert denied[0].labels["source_principal"] == str(SLEEP)
    assert denied[0].labels["reporter"] == "waypoint"
    assert sum(s.value for s in samples if s.labels["response_code"] == "200") == 202
    # The endpoint's `istio` metadata names the destination.
    v1 = [s for s in samples if s.labels["destination_workload"] == "echo-0"]
    assert v1 and v1[0].labels["destination_principal"] == str(ECHO)
    assert v1[0].labels["destination_workload_namespace"] == "default"

    dump = httpx.get(f"http://{WP_IP}:{world.ports['admin']}/config_dump").json()
    assert dump["certificate"]["identity"] == str(WAYPOINT) and dump["certificate"]["serial"]
    assert {e["address"] for e in dump["clusters"][V2]["endpoints"]} == {"127.0.0.3:8080"}
    log = world.log.read_text()
    denied_line = next(line for line in log.splitlines() if '"status":403' in line)
    assert '"local_reply":"RBAC: access denied"' in denied_line
    assert "rbac_access_denied_matched_policy[none]" in denied_line


def test_jwt_then_rbac_on_a_claim(world: World) -> None:
    async def scenario() -> None:
        def bearer(value: str) -> tuple:
            return (("authorization", f"Bearer {value}"),)

        status, _, body = await world.get(JWT_VIP, JWT_HOST, "/", bearer(token(["dev", "admin"])))
        assert (status, body) == (200, b"v1")
        status, _, body = await world.get(JWT_VIP, JWT_HOST, "/", bearer(token(["dev"])))
        assert (status, body) == (403, b"RBAC: access denied")
        status, headers, body = await world.get(JWT_VIP, JWT_HOST, "/", bearer(token(["admin"], key=OTHER_KEY)))
        assert (status, body) == (401, b"Jwt verification fails")
        assert headers["www-authenticate"] == f'Bearer realm="http://{JWT_HOST}:{PORT}/", error="invalid_token"'
        status, _, _ = await world.get(JWT_VIP, JWT_HOST, "/")  # no token passes authentication...
        assert status == 403  # ...but has no claim to show

    world.run(scenario())


def test_retries_timeout_and_faults(world: World) -> None:
    async def scenario() -> None:
        tunnel = await world.tunnel(L7_VIP)
        conn = h11.Connection(h11.CLIENT)
        before = world.backends.seen[FLAKY]
        statuses = [(await http1(tunnel, conn, "GET", "/retry", L7_HOST))[0] for _ in range(10)]
        assert statuses == [200] * 10
        assert world.backends.seen[FLAKY] - before >= 15  # every other attempt failed and was retried

        started = time.monotonic()
        status, _, body = await http1(tunnel, conn, "GET", "/timeout", L7_HOST)
        elapsed = time.monotonic() - started
        assert (status, body) == (504, b"upstream request timeout")
        assert TIMEOUT <= elapsed < TIMEOUT + 0.1, elapsed

        assert (await http1(tunnel, conn, "GET", "/abort", L7_HOST))[::2] == (418, b"fault filter abort")
        started = time.monotonic()
        assert (await http1(tunnel, conn, "GET", "/delay", L7_HOST))[::2] == (200, b"v1")
        assert time.monotonic() - started >= DELAY

    world.run(scenario())
    flags = Counter()
    for s in world.scrape():
        if s.labels["destination_service"] == L7_HOST:
            flags[(s.labels["response_code"], s.labels["response_flags"])] += s.value
    assert flags[("504", "UT")] == 1 and flags[("418", "FI")] == 1 and flags[("200", "DI")] == 1


def test_circuit_breaker_overflow(world: World) -> None:
    async def one() -> tuple[int, bytes]:
        status, _, body = await world.get(L7_VIP, L7_HOST, "/breaker")
        return status, body

    async def scenario() -> list[tuple[int, bytes]]:
        return await asyncio.gather(*(one() for _ in range(10)))

    results = world.run(scenario())
    overflow = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
    rejected = [r for r in results if r == (503, overflow)]
    assert len(rejected) >= 5 and results.count((200, b"127.0.0.6")) >= 2, results
    counted = [s for s in world.scrape() if s.labels["response_flags"] == "UO"]
    assert sum(s.value for s in counted) == len(rejected)


def test_outlier_detection_ejects_the_failing_endpoint(world: World) -> None:
    async def scenario() -> list[int]:
        tunnel = await world.tunnel(L7_VIP)
        conn = h11.Connection(h11.CLIENT)
        return [(await http1(tunnel, conn, "GET", "/outlier", L7_HOST))[0] for _ in range(26)]

    statuses = world.run(scenario())
    assert statuses[:6].count(503) == 3, statuses  # round robin until the third 5xx ejects it
    assert statuses[6:] == [200] * 20, statuses
    dump = httpx.get(f"http://{WP_IP}:{world.ports['admin']}/config_dump").json()
    ejected = [e["address"] for e in dump["clusters"][f"inbound-vip|80|outlier|{L7_HOST}"]["endpoints"] if e["ejected"]]
    assert ejected == ["127.0.0.7:8080"]


def test_grpc_through_the_waypoint(world: World) -> None:
    async def scenario() -> None:
        headers, reply, status = await grpc_call(await world.tunnel(L7_VIP), "/echo.Echo/Say", b"mesh")
        assert headers[":status"] == "200" and reply == b"hello mesh"
        assert status["grpc-status"] == "0"

        _, _, status = await grpc_call(await world.tunnel(L7_VIP), "/echo.Echo/Say", b"fail")
        assert (status["grpc-status"], status["grpc-message"]) == ("5", "no such greeting")

        # Answers of the waypoint itself, as gRPC.
        headers, _, status = await grpc_call(await world.tunnel(JWT_VIP), "/echo.Echo/Say", b"x", host=JWT_HOST)
        assert headers[":status"] == "200" and status["grpc-status"] == "7"  # RBAC: PERMISSION_DENIED
        headers, _, status = await grpc_call(await world.tunnel(L7_VIP), "/empty/Say", b"x")
        assert headers[":status"] == "200" and status["grpc-status"] == "14"  # no healthy upstream
        assert status["grpc-message"] == "no healthy upstream"

    world.run(scenario())
    grpc_samples = [s for s in world.scrape() if s.labels["request_protocol"] == "grpc"]
    assert {s.labels["grpc_response_status"] for s in grpc_samples} == {"0", "5", "7", "14"}
