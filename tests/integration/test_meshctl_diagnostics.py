"""`meshctl analyze`, `x describe` and `x authz check` run as processes against a real istiod, with
mesh-xds and mesh-worker writing the status conditions and the waypoint's address."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from tests import harness

pytestmark = pytest.mark.integration

MERGE = {"Content-Type": "application/merge-patch+json"}
APS = "/apis/security.istio.io/v1/namespaces/{ns}/authorizationpolicies"
GATEWAYS = "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/gateways"


def create(client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def running_pod(client, ns: str, name: str, ip: str, sa: str, app: str) -> None:
    """A pod as mesh-runtime and the node agent leave it: Running, with an IP, captured."""
    create(
        client,
        f"/api/v1/namespaces/{ns}/pods",
        {
            "metadata": {
                "name": name,
                "labels": {"app": app},
                "annotations": {"ambient.istio.io/redirection": "enabled"},
            },
            "spec": {"nodeName": "node-1", "serviceAccountName": sa, "containers": [{"name": "c", "image": "x"}]},
        },
    )
    status = {"status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}
    response = client.patch(f"/api/v1/namespaces/{ns}/pods/{name}/status", json=status, headers=MERGE)
    assert response.status_code == 200, response.text


def service(client, ns: str, name: str, app: str, labels: dict | None = None) -> None:
    body = {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]},
    }
    create(client, f"/api/v1/namespaces/{ns}/services", body)


def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def istiod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Istiod]:
    tmp = tmp_path_factory.mktemp("meshctl-diagnostics")
    with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod):
        harness.create_node(istiod, "node-1")
        with harness.running_xds(istiod), harness.running_worker(istiod), istiod.client() as client:
            ambient = {"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}}
            client.patch("/api/v1/namespaces/default", json=ambient, headers=MERGE).raise_for_status()
            create(client, "/api/v1/namespaces", {"metadata": {"name": "locked", **ambient["metadata"]}})
            running_pod(client, "default", "client", "198.18.40.10", "sleep", "sleep")
            running_pod(client, "default", "reviews-0", "198.18.40.20", "reviews", "reviews")
            running_pod(client, "locked", "db-0", "198.18.40.30", "db", "db")
            service(client, "default", "reviews", "reviews", {"istio.io/use-waypoint": "waypoint"})
            service(client, "default", "ratings", "ratings", {"istio.io/use-waypoint": "missing"})
            service(client, "locked", "db", "db")
            waypoint = {
                "metadata": {"name": "waypoint"},
                "spec": {
                    "gatewayClassName": "istio-waypoint",
                    "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
                },
            }
            create(client, GATEWAYS.format(ns="default"), waypoint)
            get_only = {"targetRefs": [{"kind": "Service", "group": "", "name": "reviews"}]}
            get_only["rules"] = [{"to": [{"operation": {"methods": ["GET"]}}]}]
            create(client, APS.format(ns="default"), {"metadata": {"name": "allow-get"}, "spec": get_only})
            l7_at_ztunnel = {
                "selector": {"matchLabels": {"app": "nothing-here"}},
                "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}],
            }
            create(client, APS.format(ns="default"), {"metadata": {"name": "l7-only"}, "spec": l7_at_ztunnel})
            create(client, APS.format(ns="locked"), {"metadata": {"name": "allow-nothing"}, "spec": {}})

            def addressed() -> bool:
                gw = client.get(f"{GATEWAYS.format(ns='default')}/waypoint").json()
                return bool((gw.get("status") or {}).get("addresses"))

            until(addressed, 20, "mesh-worker to give the waypoint an address")
            yield istiod


def meshctl(istiod: harness.Istiod, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(harness.VENV_BIN / "meshctl"), *args, "--state-dir", str(istiod.state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_analyze_reports_conditions_and_dangling_waypoint_and_exits_79(istiod: harness.Istiod) -> None:
    def reported() -> subprocess.CompletedProcess[str] | None:
        result = meshctl(istiod, "analyze", "-n", "default")
        return result if "(AuthorizationPolicy default/l7-only)" in result.stdout else None

    result = until(reported, 15, "the ZtunnelAccepted condition of default/l7-only")
    lines = result.stdout.splitlines()
    assert result.returncode == 79, result.stdout + result.stderr
    assert lines[0] == (
        'Error [IST0101] (Service default/ratings) Referenced waypoint not found: "default/missing" '
        "(label istio.io/use-waypoint); create it with: meshctl waypoint apply -n default --name missing, "
        "or fix the label"
    )
    l7 = next(line for line in lines if "(AuthorizationPolicy default/l7-only)" in line)
    assert l7.startswith("Warning [IST0171] (AuthorizationPolicy default/l7-only) A condition reports a partial")
    assert "type=ZtunnelAccepted, reason=UnsupportedValue" in l7 and "found: methods" in l7
    assert "Error: Analyzers found issues when analyzing namespace: default." in result.stderr

    clean = meshctl(istiod, "analyze", "-n", "locked")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.strip() == "✔ No validation issues found when analyzing namespace: locked."


def test_describe_pod_shows_its_waypoint_and_policies(istiod: harness.Istiod) -> None:
    result = meshctl(istiod, "x", "describe", "pod", "reviews-0")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "   Node: node-1" in out
    assert "   Enrolled: yes (ambient.istio.io/redirection: enabled)" in out
    assert "   Identity: spiffe://cluster.local/ns/default/sa/reviews" in out
    assert "   Service default/reviews: default/waypoint via service label (Programmed=" in out
    assert "   default/allow-get   ALLOW   (targets Service reviews)" in out
    assert "   note: certificate not shown:" in out  # no ztunnel runs in this test

    svc = meshctl(istiod, "x", "describe", "svc", "reviews", "-o", "yaml")
    assert svc.returncode == 0 and "waypoint: default/waypoint" in svc.stdout


def test_authz_check_l7_and_l4(istiod: harness.Istiod) -> None:
    get = meshctl(istiod, "x", "authz", "check", "client", "reviews:9080", "GET", "/ratings")
    assert get.returncode == 0, get.stderr
    l7 = next(line for line in get.stdout.splitlines() if line.startswith("L7"))
    assert "ALLOW" in l7.split() and "default/allow-get (ALLOW)" in l7, get.stdout
    assert "Note: traffic goes through waypoint default/waypoint" in get.stdout

    delete = meshctl(istiod, "x", "authz", "check", "default/client", "reviews:9080", "DELETE")
    l7 = next(line for line in delete.stdout.splitlines() if line.startswith("L7"))
    assert "DENY" in l7.split() and "default/allow-get (ALLOW)" in l7, delete.stdout

    locked = meshctl(istiod, "x", "authz", "check", "client", "locked/db:9080")
    l4 = [line for line in locked.stdout.splitlines() if line.startswith("L4")]
    assert len(l4) == 1 and "DENY" in l4[0].split(), locked.stdout
    assert "no ALLOW policy matched (locked/allow-nothing)" in l4[0]

    missing = meshctl(istiod, "x", "authz", "check", "nobody", "reviews:9080")
    assert missing.returncode == 1 and missing.stderr.startswith('meshctl: source pod "default/nobody" not found')
