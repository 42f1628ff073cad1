"""mesh.waypoint.reconcile run by a real mesh-worker against a real istiod, queued through Celery
on a Redis of the test's own (so no other worker takes the jobs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from mesh.jobs import RECONCILE_WAYPOINT
from tests.integration.reconcile_plane import Plane, eventually, running_plane

pytestmark = pytest.mark.integration

GATEWAYS = "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/gateways"
PODS = "/api/v1/namespaces/{ns}/pods"
MERGE = {"Content-Type": "application/merge-patch+json"}
SELECTOR = "gateway.networking.k8s.io/gateway-name={name},gateway.istio.io/managed=istio.io-mesh-controller"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    tmp = tmp_path_factory.mktemp("waypoint-reconcile")
    with running_plane(tmp, RECONCILE_WAYPOINT, ("node-1", "node-2")) as p:
        yield p


def waypoint(name: str, listeners: list[dict] | None = None, **annotations: str) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": listeners or [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    }


def pods(client: httpx.Client, ns: str, name: str) -> list[dict]:
    response = client.get(PODS.format(ns=ns), params={"labelSelector": SELECTOR.format(name=name)})
    return sorted(response.json()["items"], key=lambda p: p["metadata"]["name"])


def conditions(gateway: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (gateway.get("status") or {}).get("conditions") or []}


def set_running(client: httpx.Client, pod: dict) -> None:
    """What mesh-runtime reports once the waypoint process is up and its readiness probe passes."""
    status = {"phase": "Running", "podIP": "198.18.1.7", "conditions": [{"type": "Ready", "status": "True"}]}
    response = client.patch(
        f"{PODS.format(ns=pod['metadata']['namespace'])}/{pod['metadata']['name']}/status",
        json={"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text


def test_gateway_becomes_service_pods_and_status_then_goes(plane: Plane) -> None:
    gw_path = f"{GATEWAYS.format(ns='default')}/reviews-wp"
    with plane.istiod.client() as client:
        created = client.post(
            GATEWAYS.format(ns="default"), json=waypoint("reviews-wp", **{"mesh.istio.io/replicas": "2"})
        )
        assert created.status_code == 201, created.text
        plane.reconcile("default", "reviews-wp")

        made = eventually(
            lambda: len(pods(client, "default", "reviews-wp")) == 2 and pods(client, "default", "reviews-wp"), "2 pods"
        )
        assert [p["metadata"]["name"] for p in made] == ["reviews-wp-0", "reviews-wp-1"]
        assert sorted(p["spec"]["nodeName"] for p in made) == ["node-1", "node-2"]  # spread over the nodes
        assert made[0]["spec"]["containers"][0]["command"] == ["waypoint", "--gateway", "default/reviews-wp"]
        assert made[0]["spec"]["serviceAccountName"] == "waypoint"
        assert made[0]["metadata"]["labels"]["istio.io/dataplane-mode"] == "none"
        assert made[0]["metadata"]["ownerReferences"][0]["uid"] == created.json()["metadata"]["uid"]
        service = client.get("/api/v1/namespaces/default/services/reviews-wp").json()
        assert [p["port"] for p in service["spec"]["ports"]] == [15008, 15021]

        gateway = eventually(lambda: conditions(client.get(gw_path).json()) and client.get(gw_path).json(), "status")
        assert gateway["status"]["addresses"] == [{"type": "IPAddress", "value": service["spec"]["clusterIP"]}]
        conds = conditions(gateway)
        assert conds["Accepted"]["status"] == "True"
        assert conds["Programmed"]["status"] == "False" and conds["Programmed"]["reason"] == "Pending"
        assert "reviews-wp-0 on node-" in conds["Programmed"]["message"]

        # Running twice (even at once) changes nothing.
        before = gateway["metadata"]["resourceVersion"]
        plane.reconcile("default", "reviews-wp")
        plane.reconcile("default", "reviews-wp")
        time.sleep(1.0)
        assert client.get(gw_path).json()["metadata"]["resourceVersion"] == before
        assert [p["metadata"]["uid"] for p in pods(client, "default", "reviews-wp")] == [
            p["metadata"]["uid"] for p in made
        ]

        set_running(client, made[0])
        plane.reconcile("default", "reviews-wp")
        programmed = eventually(
            lambda: (
                conditions(client.get(gw_path).json())["Programmed"]["status"] == "True"
                and conditions(client.get(gw_path).json())["Programmed"]
            ),
            "Programmed=True",
        )
        assert "reviews-wp.default.svc.cluster.local:15008" in programmed["message"]

        # Scaling down removes the surplus replica.
        client.patch(
            gw_path,
            json={"metadata": {"annotations": {"mesh.istio.io/replicas": "1"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        plane.reconcile("default", "reviews-wp")
        eventually(
            lambda: [p["metadata"]["name"] for p in pods(client, "default", "reviews-wp")] == ["reviews-wp-0"],
            "scale down",
        )

        assert client.delete(gw_path).status_code == 200
        plane.reconcile("default", "reviews-wp")
        eventually(lambda: not pods(client, "default", "reviews-wp"), "the pods to go")
        eventually(
            lambda: client.get("/api/v1/namespaces/default/services/reviews-wp").status_code == 404, "the Service to go"
        )


def test_a_gateway_without_the_hbone_listener_gets_no_pods(plane: Plane) -> None:
    gw_path = f"{GATEWAYS.format(ns='default')}/no-hbone"
    with plane.istiod.client() as client:
        http_only = waypoint("no-hbone", [{"name": "http", "port": 8080, "protocol": "HTTP"}])
        assert client.post(GATEWAYS.format(ns="default"), json=http_only).status_code == 201
        plane.reconcile("default", "no-hbone")
        conds = eventually(lambda: conditions(client.get(gw_path).json()), "status")
        assert conds["Accepted"]["status"] == "False" and conds["Accepted"]["reason"] == "ListenersNotValid"
        assert "protocol HBONE on port 15008" in conds["Accepted"]["message"]
        assert conds["Programmed"]["status"] == "False"
        assert not pods(client, "default", "no-hbone")
        assert client.get("/api/v1/namespaces/default/services/no-hbone").status_code == 404
        client.delete(gw_path)


def test_concurrent_runs_agree(plane: Plane) -> None:
    """Two reconciles at once (two workers): one wins each write, the other re-reads on 409."""
    from mesh.kubeclient import Connection, KubeClient
    from services.worker.waypoint_reconciler import reconcile

    async def both() -> list[dict]:
        conn = Connection.from_state_dir(plane.istiod.state_dir)
        async with KubeClient(conn) as a, KubeClient(conn) as b:
            return list(await asyncio.gather(reconcile(a, "default", "race"), reconcile(b, "default", "race")))

    with plane.istiod.client() as client:
        created = client.post(GATEWAYS.format(ns="default"), json=waypoint("race", **{"mesh.istio.io/replicas": "3"}))
        assert created.status_code == 201, created.text
        outcomes = asyncio.run(both())
        assert all(o["result"] == "deployed" for o in outcomes)
        assert [p["metadata"]["name"] for p in pods(client, "default", "race")] == ["race-0", "race-1", "race-2"]
        conds = conditions(client.get(f"{GATEWAYS.format(ns='default')}/race").json())
        assert conds["Accepted"]["status"] == "True" and conds["Programmed"]["reason"] == "Pending"
        client.delete(f"{GATEWAYS.format(ns='default')}/race")
        plane.reconcile("default", "race")
        eventually(lambda: not pods(client, "default", "race"), "the pods to go")


def test_a_pod_made_while_no_node_was_schedulable_is_bound_later(plane: Plane) -> None:
    def cordon(client: httpx.Client, node: str, value: bool) -> None:
        response = client.patch(f"/api/v1/nodes/{node}", json={"spec": {"unschedulable": value}}, headers=MERGE)
        assert response.status_code == 200, response.text

    with plane.istiod.client() as client:
        for node in ("node-1", "node-2"):
            cordon(client, node, True)
        try:
            assert client.post(GATEWAYS.format(ns="default"), json=waypoint("late")).status_code == 201
            plane.reconcile("default", "late")
            made = eventually(lambda: pods(client, "default", "late"), "the pod")
            assert "nodeName" not in made[0]["spec"]
            cordon(client, "node-2", False)
            plane.reconcile("default", "late")
            bound = eventually(
                lambda: pods(client, "default", "late")[0]["spec"].get("nodeName"), "the pod to be bound"
            )
            assert bound == "node-2"
            assert pods(client, "default", "late")[0]["metadata"]["uid"] == made[0]["metadata"]["uid"]
        finally:
            for node in ("node-1", "node-2"):
                cordon(client, node, False)
            client.delete(f"{GATEWAYS.format(ns='default')}/late")
            plane.reconcile("default", "late")
            eventually(lambda: not pods(client, "default", "late"), "the pods to go")
