"""Workload-addressed traffic through a real waypoint (docs/waypoint.md, "Workload traffic"): the
resources are what mesh-xds's translator makes of a Gateway with `istio.io/waypoint-for: workload`,
a pod bound to it and an AuthorizationPolicy targeting the Gateway (GET only, for sleep); the pod
is an HBONE backend on 127.0.0.2. A CONNECT to `{pod IP}:{port}` (any port) reaches the pod through
the original-destination cluster, and the policy applies."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from services.xds.generators.envoy import EnvoyTranslator
from services.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.integration.waypoint_env import OK, SLEEP
from tests.integration.waypoint_process import WP_IP, Running, running_waypoint
from tests.unit.xds import objects as o

pytestmark = pytest.mark.integration

POD_IP = OK  # an HBONE backend of waypoint_env (answers "v1")
TYPES = {
    LISTENER: "type.googleapis.com/envoy.config.listener.v3.Listener",
    ROUTE: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    CLUSTER: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    ENDPOINT: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
}


def translated() -> dict[str, dict[str, object]]:
    """mesh-xds's resources for waypoint default/wp."""
    pod = o.pod(
        "echo-0",
        ip=POD_IP,
        labels={"app": "echo", "istio.io/use-waypoint": "wp"},
        annotations={"ambient.istio.io/redirection": "enabled"},
        service_account="echo",
    )
    policy = o.authorization_policy(
        "get-for-sleep",
        targetRefs=[{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "wp"}],
        action="ALLOW",
        rules=[
            {
                "from": [{"source": {"principals": [str(SLEEP).removeprefix("spiffe://")]}}],
                "to": [{"operation": {"methods": ["GET"]}}],
            }
        ],
    )
    gateway = o.gateway("wp", labels={"istio.io/waypoint-for": "workload"})
    translator = EnvoyTranslator()
    translator.rebuild(o.Cluster(o.namespace("default"), gateway, pod, policy).store)
    return {TYPES[t]: dict(translator.resources(t)) for t in TYPES}


@pytest.fixture(scope="module")
def waypoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_waypoint(tmp_path_factory.mktemp("waypoint-workload"), translated()) as running:
        yield running


def test_pod_addressed_requests_reach_the_pod_under_the_gateway_policy(waypoint: Running) -> None:
    assert not waypoint.ads.nacks
    assert waypoint.ads.resources[TYPES[LISTENER]]["waypoint/default/wp"].filter_chains[0].name == (
        "workload/default/echo-0"
    )

    async def scenario() -> None:
        for port in (8080, 9090):  # the pod declares no port: any port goes to the address dialled
            status, _, body = await waypoint.request(f"{POD_IP}:{port}", POD_IP, "/hello")
            assert (status, body) == (200, b"v1")
        status, _, body = await waypoint.request(f"{POD_IP}:8080", POD_IP, "/hello", method="DELETE")
        assert (status, body) == (403, b"RBAC: access denied")  # the Gateway's policy allows GET only
        with pytest.raises(Exception, match="503"):
            await waypoint.client.open("127.0.0.9:8080")  # neither a bound pod nor a VIP

    waypoint.run(scenario())
    assert waypoint.backends.seen[POD_IP] == 2
    text = httpx.get(f"http://{WP_IP}:{waypoint.ports['metrics']}/stats/prometheus").text
    ok = next(line for line in text.splitlines() if line.startswith("istio_requests_total{") and 'code="200"' in line)
    assert 'destination_workload="echo-0"' in ok and 'destination_service="unknown"' in ok
    assert 'destination_principal="spiffe://cluster.local/ns/default/sa/echo"' in ok
    line = waypoint.log_line(lambda x: '"upstream_host":"127.0.0.2:9090"' in x)
    assert '"filter_chain":"workload/default/echo-0"' in line
