"""The waypoint process end to end on loopback: one real `waypoint` subprocess for the module,
with its certificate from a real mesh-ca for the service-account token istiod's TokenRequest API
gives its pod (as mesh-runtime asks for it), Envoy resources from an ADS server in the test (mTLS
with mesh-xds's serving certificate, the waypoint's client certificate required), backends that
are real HBONE servers (waypoint_env.py) and a client speaking HBONE with sleep's certificate;
the steps are waypoint_process.py's.

The asyncio side (ADS server, backends, clients) lives on one event loop in a thread, so every
test drives the same running waypoint; the last step of the module asks it to quit and checks
that it drains and exits 0.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import h11
import httpx
import pytest

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
    grpc_call,
    http1,
    http2,
    resources,
    token,
)
from tests.integration.waypoint_process import WP_IP, Running, running_waypoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_waypoint(tmp_path_factory.mktemp("waypoint"), resources(), grpc_backend=True) as running:
        yield running


def test_rbac_split_http2_and_no_chain(world: Running) -> None:
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

    dump = httpx.get(f"http://127.0.0.1:{world.ports['admin']}/config_dump").json()
    assert dump["certificate"]["identity"] == str(WAYPOINT) and dump["certificate"]["serial"]
    assert {e["address"] for e in dump["clusters"][V2]["endpoints"]} == {"127.0.0.3:8080"}
    denied_line = world.log_line(lambda line: '"status":403' in line)  # access lines go out in batches
    assert '"local_reply":"RBAC: access denied"' in denied_line
    assert "rbac_access_denied_matched_policy[none]" in denied_line


def test_jwt_then_rbac_on_a_claim(world: Running) -> None:
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


def test_retries_timeout_and_faults(world: Running) -> None:
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


def test_circuit_breaker_overflow(world: Running) -> None:
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


def test_outlier_detection_ejects_the_failing_endpoint(world: Running) -> None:
    async def scenario() -> list[int]:
        tunnel = await world.tunnel(L7_VIP)
        conn = h11.Connection(h11.CLIENT)
        return [(await http1(tunnel, conn, "GET", "/outlier", L7_HOST))[0] for _ in range(26)]

    statuses = world.run(scenario())
    assert statuses[:6].count(503) == 3, statuses  # round robin until the third 5xx ejects it
    assert statuses[6:] == [200] * 20, statuses
    dump = httpx.get(f"http://127.0.0.1:{world.ports['admin']}/config_dump").json()
    ejected = [e["address"] for e in dump["clusters"][f"inbound-vip|80|outlier|{L7_HOST}"]["endpoints"] if e["ejected"]]
    assert ejected == ["127.0.0.7:8080"]


def test_grpc_through_the_waypoint(world: Running) -> None:
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
