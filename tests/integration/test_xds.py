"""mesh-xds end to end: real istiod, mesh-ca and mesh-xds; delta ADS clients playing ztunnels."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mesh.grpc_client import RpcError, open_channel, tls_context
from mesh.proto_gen.istio.security import authorization_pb2
from mesh.proto_gen.istio.workload import workload_pb2
from mesh.xds.delta_client import DeltaClient
from tests import harness

pytestmark = pytest.mark.integration

ADDRESS = "type.googleapis.com/istio.workload.Address"
AUTHZ = "type.googleapis.com/istio.security.Authorization"
PODS = "/api/v1/namespaces/default/pods"
APS = "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[harness.Istiod, harness.MeshXds, str]]:
    tmp = tmp_path_factory.mktemp("xds")
    with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod):
        token = harness.create_node(istiod, "node-1")
        with harness.running_xds(istiod) as xds:
            yield istiod, xds, token


def running_pod(client, name: str, ip: str, sa: str = "default", node: str = "node-1", **labels: str) -> dict:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"nodeName": node, "serviceAccountName": sa, "containers": [{"name": "c"}]},
    }
    client.post(PODS, json=body)
    status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
    return client.patch(f"{PODS}/{name}/status", json=status, headers=MERGE).json()


@contextlib.asynccontextmanager
async def ztunnel(
    xds: harness.MeshXds, token: str, *, validator=None, client: DeltaClient | None = None
) -> AsyncIterator[DeltaClient]:
    roots = (xds.istiod.state_dir / "root-cert.pem").read_bytes()
    channel = open_channel(xds.address, tls_context(roots))
    if client is None:
        client = DeltaClient(channel, "ztunnel~test", token=token, validator=validator)
        client.watch(ADDRESS)
        client.watch(AUTHZ)
    else:
        client.channel = channel
    task = asyncio.create_task(client.run_once())
    try:
        await client.wait_for(lambda: client.types[ADDRESS].acked > 0 and client.types[AUTHZ].acked > 0, 10)
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        channel.close()


def workload(client: DeltaClient, name: str) -> workload_pb2.Workload | None:
    held = client.types[ADDRESS].resources.get(f"Kubernetes//Pod/default/{name}")
    if held is None:
        return None
    address = workload_pb2.Address()
    held.resource.Unpack(address)
    return address.workload


def test_initial_sync_then_add_update_remove(plane) -> None:
    istiod, xds, token = plane

    async def scenario() -> None:
        async with ztunnel(xds, token) as zt:
            with istiod.client() as client:
                running_pod(client, "add-me", "198.18.16.10", sa="sleep")
                await zt.wait_for(lambda: workload(zt, "add-me") is not None, 5)
                w = workload(zt, "add-me")
                assert bytes(w.addresses[0]) == bytes([198, 18, 16, 10])
                assert w.service_account == "sleep" and w.node == "node-1"
                client.patch(
                    f"{PODS}/add-me",
                    json={"metadata": {"annotations": {"ambient.istio.io/redirection": "enabled"}}},
                    headers=MERGE,
                )
                await zt.wait_for(lambda: workload(zt, "add-me").tunnel_protocol == workload_pb2.HBONE, 5)
                client.delete(f"{PODS}/add-me")
                await zt.wait_for(lambda: workload(zt, "add-me") is None, 5)

    asyncio.run(scenario())


def test_reconnect_with_initial_resource_versions_resends_nothing_unchanged(plane) -> None:
    istiod, xds, token = plane
    with istiod.client() as client:
        for i in range(5):
            running_pod(client, f"keep-{i}", f"198.18.16.{20 + i}")

    async def scenario() -> None:
        async with ztunnel(xds, token) as zt:
            await zt.wait_for(lambda: all(workload(zt, f"keep-{i}") for i in range(5)), 5)
            held = {t: len(s.resources) for t, s in zt.types.items()}
            acked_before = zt.types[ADDRESS].acked
        with istiod.client() as client:
            annotations = {"ambient.istio.io/redirection": "enabled"}  # changes the Workload (tunnel: HBONE)
            client.patch(f"{PODS}/keep-0", json={"metadata": {"annotations": annotations}}, headers=MERGE)
        responses: list = []
        original = DeltaClient._apply

        def counting(self, response):
            responses.append(
                (response.type_url, [r.name for r in response.resources], list(response.removed_resources))
            )
            return original(self, response)

        DeltaClient._apply = counting
        try:
            async with ztunnel(xds, token, client=zt) as again:
                await again.wait_for(lambda: workload(again, "keep-0").tunnel_protocol == workload_pb2.HBONE, 5)
                assert again.types[ADDRESS].acked > acked_before
        finally:
            DeltaClient._apply = original
        address_sent = [name for type_url, names, _ in responses if type_url == ADDRESS for name in names]
        assert address_sent == ["Kubernetes//Pod/default/keep-0"], responses  # only the changed one
        assert [len(s.resources) for s in zt.types.values()] == list(held.values())

    asyncio.run(scenario())
    with istiod.client() as client:
        for i in range(5):
            client.delete(f"{PODS}/keep-{i}")


def test_a_nack_keeps_the_last_good_state_is_reported_and_spares_other_clients(plane) -> None:
    istiod, xds, token = plane

    def refuse_denies(type_url: str, name: str, resource) -> str | None:
        if type_url == AUTHZ:
            policy = authorization_pb2.Authorization()
            resource.Unpack(policy)
            if policy.action == authorization_pb2.DENY:
                return "this client refuses DENY policies"
        return None

    async def scenario() -> None:
        async with ztunnel(xds, token, validator=refuse_denies) as picky, ztunnel(xds, token) as normal:
            with istiod.client() as client:
                running_pod(client, "nack-anchor", "198.18.16.41")  # node-1 hosts "default": it gets its policies
                body = {
                    "apiVersion": "security.istio.io/v1",
                    "kind": "AuthorizationPolicy",
                    "metadata": {"name": "deny-foreign"},
                    "spec": {"action": "DENY", "rules": [{"from": [{"source": {"notNamespaces": ["default"]}}]}]},
                }
                client.post(APS, json=body)
                await normal.wait_for(lambda: "default/deny-foreign" in normal.types[AUTHZ].resources, 5)
                await picky.wait_for(lambda: picky.types[AUTHZ].nacked > 0, 5)
                assert "default/deny-foreign" not in picky.types[AUTHZ].resources
                status = {s["id"]: s for s in xds.syncz()}
                nacked = [s for s in status.values() if s["types"].get("Authorization", {}).get("last_nack")]
                assert len(nacked) == 1 and "refuses DENY" in nacked[0]["types"]["Authorization"]["last_nack"]
                running_pod(client, "after-nack", "198.18.16.40")  # the NACKing client still gets Addresses
                await picky.wait_for(lambda: workload(picky, "after-nack") is not None, 5)
                client.delete(f"{APS}/deny-foreign")
                client.delete(f"{PODS}/after-nack")
                client.delete(f"{PODS}/nack-anchor")

    asyncio.run(scenario())


def test_streams_need_a_node_token_or_a_workload_certificate(plane) -> None:
    istiod, xds, _token = plane

    async def attempt(credential: str | None) -> str:
        roots = (istiod.state_dir / "root-cert.pem").read_bytes()
        async with open_channel(xds.address, tls_context(roots)) as channel:
            client = DeltaClient(channel, "x", token=credential)
            client.watch(ADDRESS)
            try:
                await asyncio.wait_for(client.run_once(), 5)
            except RpcError as e:
                return e.code
        return "OK"

    assert asyncio.run(attempt(None)) == "UNAUTHENTICATED"
    assert asyncio.run(attempt(istiod.token)) == "UNAUTHENTICATED"
    assert asyncio.run(attempt("e30.e30.e30")) == "UNAUTHENTICATED"


def test_proxy_status_reports_synced_streams(plane) -> None:
    _istiod, xds, token = plane

    async def scenario() -> None:
        async with ztunnel(xds, token):
            await asyncio.sleep(0.3)
            mine = [s for s in xds.syncz() if s["node"] == "node-1"]
            assert mine and mine[0]["kind"] == "ztunnel" and mine[0]["node_id"] == "ztunnel~test"
            assert {t["status"] for t in mine[0]["types"].values()} == {"SYNCED"}

    asyncio.run(scenario())


def test_kill_9_of_xds_and_a_redis_restart_lose_no_change(tmp_path: Path, redis_server: harness.RedisServer) -> None:
    with harness.running_istiod(tmp_path, "sqlite", redis_server.url) as istiod, harness.running_ca(istiod):
        token = harness.create_node(istiod, "node-1")
        xds = harness.MeshXds(istiod)
        xds.start()
        try:

            async def scenario() -> None:
                async with ztunnel(xds, token) as zt:
                    with istiod.client() as client:
                        for i in range(20):
                            running_pod(client, f"churn-{i}", f"198.18.17.{i + 1}")
                            if i == 7:
                                assert xds.proc is not None
                                xds.proc.send_signal(signal.SIGKILL)
                                xds.proc.wait()
                                xds.proc = None
                            if i == 12:
                                redis_server.stop()
                                redis_server.start()
                        for i in range(0, 20, 2):
                            client.delete(f"{PODS}/churn-{i}")
                xds.start()
                async with ztunnel(xds, token, client=zt):  # the same client reconnects with what it holds
                    wanted = {f"churn-{i}" for i in range(1, 20, 2)}
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline:
                        have = {n.rsplit("/", 1)[-1] for n in zt.types[ADDRESS].resources if "/Pod/" in n}
                        if have == wanted:
                            break
                        await asyncio.sleep(0.1)
                    assert have == wanted

            asyncio.run(scenario())
        finally:
            xds.stop()
