"""Status written back through istiod by mesh-worker, and which policies a node's ztunnel sees."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests import harness
from tests.integration.test_xds import AUTHZ, running_pod, ztunnel

pytestmark = pytest.mark.integration

APS = "/apis/security.istio.io/v1/namespaces/{ns}/authorizationpolicies"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[harness.Istiod, harness.MeshXds, str]]:
    tmp = tmp_path_factory.mktemp("xds-status")
    with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod):
        token = harness.create_node(istiod, "node-1")
        with harness.running_xds(istiod) as xds, harness.running_worker(istiod):
            yield istiod, xds, token


def condition(client, path: str, kind: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for cond in (client.get(path).json().get("status") or {}).get("conditions") or []:
            if cond["type"] == kind:
                return cond
        time.sleep(0.1)
    raise AssertionError(f"no {kind} condition on {path}")


def policy(name: str, spec: dict) -> dict:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_ztunnel_accepted_says_when_http_attributes_were_dropped(plane) -> None:
    istiod, _xds, _token = plane
    with istiod.client() as client:
        aps = APS.format(ns="default")
        client.post(aps, json=policy("l4-only", {"rules": [{"from": [{"source": {"namespaces": ["default"]}}]}]}))
        client.post(aps, json=policy("get-only", {"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}))
        ok = condition(client, f"{aps}/l4-only", "ZtunnelAccepted")
        assert ok["status"] == "True" and "attached to ztunnel" in ok["message"].lower()
        l7 = condition(client, f"{aps}/get-only", "ZtunnelAccepted")
        # As Istio: accepted (status True) with a warning reason; the message says what was dropped.
        assert l7["status"] == "True" and l7["reason"] == "UnsupportedValue"
        assert "ztunnel does not support HTTP attributes (found: methods)" in l7["message"]
        assert l7["observedGeneration"] == 1 and l7["lastTransitionTime"]
        client.patch(
            f"{aps}/get-only",
            json={"spec": {"rules": [{"from": [{"source": {"namespaces": ["x"]}}]}]}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        deadline = time.monotonic() + 10
        while condition(client, f"{aps}/get-only", "ZtunnelAccepted")["reason"] != "Accepted":
            assert time.monotonic() < deadline, "the condition did not follow the fixed policy"
            time.sleep(0.1)
        assert condition(client, f"{aps}/get-only", "ZtunnelAccepted")["observedGeneration"] == 2


def test_a_node_gets_the_policies_of_namespaces_it_hosts(plane) -> None:
    istiod, xds, token = plane
    with istiod.client() as client:
        for ns in ("hosted", "elsewhere"):
            client.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            client.post(
                APS.format(ns=ns),
                json=policy(
                    "deny-foreign", {"action": "DENY", "rules": [{"from": [{"source": {"notNamespaces": [ns]}}]}]}
                ),
            )
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]},
        }
        client.post("/api/v1/namespaces/hosted/pods", json=body)

        async def scenario() -> None:
            async with ztunnel(xds, token) as zt:
                await zt.wait_for(lambda: "hosted/deny-foreign" in zt.types[AUTHZ].resources, 5)
                assert "elsewhere/deny-foreign" not in zt.types[AUTHZ].resources
                client.post("/api/v1/namespaces/elsewhere/pods", json=body)
                await zt.wait_for(lambda: "elsewhere/deny-foreign" in zt.types[AUTHZ].resources, 5)
                client.delete("/api/v1/namespaces/hosted/pods/p")
                await zt.wait_for(lambda: "hosted/deny-foreign" not in zt.types[AUTHZ].resources, 5)

        asyncio.run(scenario())


def test_running_pods_still_reach_the_ztunnel_with_status(plane) -> None:
    istiod, xds, token = plane
    with istiod.client() as client:
        running_pod(client, "status-pod", "198.18.16.77")

        async def scenario() -> None:
            async with ztunnel(xds, token) as zt:
                name = "Kubernetes//Pod/default/status-pod"
                await zt.wait_for(lambda: name in zt.types["type.googleapis.com/istio.workload.Address"].resources, 5)

        asyncio.run(scenario())
