"""`meshctl waypoint apply|list|status|delete` run as a process against a real istiod, with a real
mesh-worker (on a Redis of the test's own) writing the Gateway status."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml
from celery import Celery

from mesh.jobs import QUEUE, RECONCILE_WAYPOINT
from tests import harness

pytestmark = pytest.mark.integration

GATEWAYS = "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/gateways"
MERGE = {"Content-Type": "application/merge-patch+json"}


@dataclass
class Plane:
    istiod: harness.Istiod
    celery: Celery

    @property
    def state(self) -> str:
        return str(self.istiod.state_dir)

    def reconcile(self, ns: str, name: str) -> None:
        """What mesh-xds does after a batch touching the Gateway."""
        self.celery.send_task(RECONCILE_WAYPOINT, args=[ns, name], queue=QUEUE)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    tmp = tmp_path_factory.mktemp("meshctl-waypoint")
    with harness.redis_server(tmp) as redis, harness.running_istiod(tmp, "sqlite", redis.url) as istiod:
        with istiod.client() as client:
            created = client.post("/api/v1/namespaces", json={"metadata": {"name": "bookinfo"}})
            assert created.status_code == 201, created.text
        with harness.running_worker(istiod):
            celery = Celery("test-producer", broker=redis.url)
            yield Plane(istiod, celery)
            celery.close()


def meshctl(plane: Plane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(harness.VENV_BIN / "meshctl"), "waypoint", *args, "--state-dir", plane.state],
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, f"{result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout.splitlines()


def test_apply_creates_the_waypoint_gateway_and_is_idempotent(plane: Plane) -> None:
    assert ok(meshctl(plane, "apply", "-n", "default")) == ["✅ waypoint default/waypoint applied"]
    with plane.istiod.client() as client:
        gw = client.get(f"{GATEWAYS.format(ns='default')}/waypoint").json()
    assert gw["spec"]["gatewayClassName"] == "istio-waypoint"
    assert gw["spec"]["listeners"] == [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]
    assert ok(meshctl(plane, "apply", "-n", "default")) == ["✅ waypoint default/waypoint applied"]

    differs = meshctl(plane, "apply", "-n", "default", "--for", "workload", "--replicas", "2")
    assert differs.returncode == 1
    assert differs.stderr.strip() == (
        "meshctl: Gateway default/waypoint already exists and differs from the waypoint asked for; "
        "pass --overwrite to replace it"
    )
    ok(meshctl(plane, "apply", "-n", "default", "--for", "workload", "--replicas", "2", "--overwrite"))
    with plane.istiod.client() as client:
        gw = client.get(f"{GATEWAYS.format(ns='default')}/waypoint").json()
    assert gw["metadata"]["labels"]["istio.io/waypoint-for"] == "workload"
    assert gw["metadata"]["annotations"]["mesh.istio.io/replicas"] == "2"


def test_enroll_namespace_labels_it_and_warns_when_not_ambient(plane: Plane) -> None:
    result = meshctl(plane, "apply", "-n", "bookinfo", "--name", "bookinfo-wp", "--enroll-namespace")
    assert ok(result) == [
        "✅ waypoint bookinfo/bookinfo-wp applied",
        '✅ namespace bookinfo labeled with "istio.io/use-waypoint: bookinfo-wp"',
    ]
    assert "istio.io/dataplane-mode=ambient" in result.stderr
    with plane.istiod.client() as client:
        labels = client.get("/api/v1/namespaces/bookinfo").json()["metadata"]["labels"]
    assert labels["istio.io/use-waypoint"] == "bookinfo-wp"
    switch = meshctl(plane, "apply", "-n", "bookinfo", "--name", "other", "--enroll-namespace")
    assert switch.returncode == 1 and 'already uses waypoint "bookinfo-wp"' in switch.stderr


def test_list_shows_istioctl_columns_and_structured_output(plane: Plane) -> None:
    ok(meshctl(plane, "apply", "-n", "bookinfo", "--name", "listed"))
    ok(meshctl(plane, "apply", "-n", "default", "--name", "listed-all", "--for", "all"))
    lines = ok(meshctl(plane, "list", "-n", "bookinfo"))
    assert lines[0].split() == ["NAME", "REVISION", "TRAFFIC", "TYPE", "PROGRAMMED"]
    assert ["listed", "default", "service", "False"] in [line.split() for line in lines[1:]]
    everywhere = [line.split() for line in ok(meshctl(plane, "list", "-A"))]
    assert everywhere[0][0] == "NAMESPACE"
    assert ["default", "listed-all", "default", "all", "False"] in everywhere
    assert ["bookinfo", "listed", "default", "service", "False"] in everywhere
    doc = json.loads(meshctl(plane, "list", "-n", "bookinfo", "-o", "json").stdout)
    assert doc["kind"] == "List" and "listed" in [g["metadata"]["name"] for g in doc["items"]]
    assert yaml.safe_load(meshctl(plane, "list", "-A", "-o", "yaml").stdout)["items"]
    with plane.istiod.client() as client:
        client.post("/api/v1/namespaces", json={"metadata": {"name": "empty"}})
    assert ok(meshctl(plane, "list", "-n", "empty")) == ["No waypoints found."]


def test_status_says_what_is_pending_then_ready(plane: Plane) -> None:
    ok(meshctl(plane, "apply", "-n", "default", "--name", "st"))
    waiting = meshctl(plane, "status", "-n", "default", "--name", "st")
    assert waiting.returncode == 1 and "no status yet: mesh-worker has not reconciled it" in waiting.stderr

    plane.reconcile("default", "st")
    deadline = time.monotonic() + 15
    while "Pending" not in (pending := meshctl(plane, "status", "-n", "default", "--name", "st")).stderr:
        assert time.monotonic() < deadline, pending.stderr
        time.sleep(0.2)
    assert pending.returncode == 1
    assert pending.stderr.strip() == (
        "meshctl: waypoint default/st is not ready: Programmed=False (Pending): "
        "0/1 waypoint pods ready: st-0 is not bound to a node (no schedulable Ready Node)"
    )

    # What mesh-runtime reports once the waypoint runs on a node; the next reconcile sees it.
    with plane.istiod.client() as client:
        running = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
        response = client.patch("/api/v1/namespaces/default/pods/st-0/status", json=running, headers=MERGE)
        assert response.status_code == 200, response.text
    plane.reconcile("default", "st")
    deadline = time.monotonic() + 15
    while (ready := meshctl(plane, "status", "-n", "default", "--name", "st")).returncode != 0:
        assert time.monotonic() < deadline, ready.stderr
        time.sleep(0.2)
    assert ready.stdout.strip() == "✅ waypoint default/st is ready!"
    assert ok(meshctl(plane, "apply", "-n", "default", "--name", "st", "--wait"))[-1] == (
        "✅ waypoint default/st is ready!"
    )


def test_wait_times_out_saying_what_is_missing(plane: Plane) -> None:
    started = time.monotonic()
    result = meshctl(plane, "apply", "-n", "default", "--name", "slow", "--wait", "--waypoint-timeout", "2s")
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert result.stdout.splitlines()[:2] == [
        "✅ waypoint default/slow applied",
        "⏳ waiting for waypoint default/slow: no status yet: mesh-worker has not reconciled it "
        "(are mesh-worker and mesh-xds running?)",
    ]
    assert result.stderr.strip().startswith("meshctl: waypoint default/slow is not ready after 2s: no status yet")


def test_delete_named_and_all(plane: Plane) -> None:
    for name in ("d1", "d2", "d3"):
        ok(meshctl(plane, "apply", "-n", "bookinfo", "--name", name))
    assert ok(meshctl(plane, "delete", "-n", "bookinfo", "d1", "d2")) == [
        "waypoint bookinfo/d1 deleted",
        "waypoint bookinfo/d2 deleted",
    ]
    missing = meshctl(plane, "delete", "-n", "bookinfo", "d1")
    assert missing.returncode == 1 and missing.stderr.strip() == "meshctl: waypoint bookinfo/d1 not found"
    everything = ok(meshctl(plane, "delete", "-n", "bookinfo", "--all"))
    assert "waypoint bookinfo/d3 deleted" in everything
    assert ok(meshctl(plane, "list", "-n", "bookinfo")) == ["No waypoints found."]


def list_with(plane: Plane, kubeconfig, *kubeconfig_args: str) -> subprocess.CompletedProcess[str]:
    """`meshctl waypoint list` through a kubeconfig written with `kubeconfig_args`."""
    meshctl_bin = str(harness.VENV_BIN / "meshctl")
    write = [meshctl_bin, "kubeconfig", "--state-dir", plane.state, "-o", str(kubeconfig), *kubeconfig_args]
    subprocess.run(write, check=True, capture_output=True)
    return subprocess.run(
        [meshctl_bin, "waypoint", "list", "--kubeconfig", str(kubeconfig)], capture_output=True, text=True, timeout=30
    )


def test_errors_are_one_clear_line(plane: Plane, tmp_path) -> None:
    nowhere = meshctl(plane, "apply", "-n", "nope")
    assert nowhere.returncode == 1
    assert nowhere.stderr.strip() == (
        'meshctl: namespace "nope" not found; create it with: kubectl create namespace nope'
    )

    bad_token = tmp_path / "bad-token"
    bad_token.write_text("not-a-token\n")
    refused = list_with(plane, tmp_path / "bad.kubeconfig", "--token-file", str(bad_token))
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert "401 Unauthorized" in refused.stderr

    unreachable = list_with(plane, tmp_path / "down.kubeconfig", "--server", f"https://127.0.0.1:{harness.free_port()}")
    assert unreachable.returncode == 1 and len(unreachable.stderr.splitlines()) == 1
    assert unreachable.stderr.startswith("meshctl: cannot reach istiod at https://127.0.0.1:")
