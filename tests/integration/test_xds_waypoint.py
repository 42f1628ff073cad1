"""A waypoint's configuration from a real mesh-xds (with istiod and mesh-ca): a client holding the
waypoint's certificate subscribes by delta ADS to its Listener by name and gets a filter chain per
bound Service (with the RBAC filter of a targetRefs policy) and the chain's routes; a client with
another identity is answered as if the Listener did not exist."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from mesh.identity import Identity
from mesh.xds.delta_client import DeltaClient
from tests.integration.xds_subscriber import Plane, create, running_plane, subscribe

pytestmark = pytest.mark.integration

NS = "default"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
WAYPOINT_LISTENER = f"waypoint/{NS}/waypoint"
HOST = f"reviews.{NS}.svc.cluster.local"
ROUTE_NAME = f"inbound-vip|9080|http|{HOST}"
MERGE = {"Content-Type": "application/merge-patch+json"}
WAYPOINT_ID = Identity("cluster.local", NS, "waypoint")
SLEEP_ID = Identity("cluster.local", NS, "sleep")


def _configure(api) -> None:
    gateways = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/gateways"
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "waypoint"},
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    }
    create(api, gateways, gateway)
    status = {"status": {"addresses": [{"type": "IPAddress", "value": "198.19.0.200"}]}}
    response = api.patch(f"{gateways}/waypoint/status", json=status, headers=MERGE)
    assert response.status_code == 200, response.text
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "reviews", "labels": {"istio.io/use-waypoint": "waypoint"}},
        "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
    }
    create(api, f"/api/v1/namespaces/{NS}/services", service)
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow-get"},
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}],
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"principals": [f"cluster.local/ns/{NS}/sa/sleep"]}}],
                    "to": [{"operation": {"methods": ["GET"]}}],
                }
            ],
        },
    }
    create(api, f"/apis/security.istio.io/v1/namespaces/{NS}/authorizationpolicies", policy)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    waypoint_pod = ("waypoint-0", WAYPOINT_ID, {"gateway.networking.k8s.io/gateway-name": "waypoint"})
    pods = [waypoint_pod, ("sleep", SLEEP_ID, {"app": "sleep"})]
    with running_plane(tmp_path_factory.mktemp("xds-waypoint"), pods, _configure) as plane:
        yield plane


async def _subscribe(plane: Plane, identity: Identity, type_url: str, name: str) -> DeltaClient:
    """A delta ADS stream as the waypoint's pod with `identity`'s certificate (xds_subscriber.py)."""
    node = f"waypoint~198.18.0.9~waypoint-0.{NS}~{NS}.svc.cluster.local"
    metadata = {"NAMESPACE": NS, "NAME": "waypoint-0", "WAYPOINT": f"{NS}/waypoint"}
    return await subscribe(plane, identity, type_url, name, node, metadata)


def test_the_waypoint_identity_receives_its_listener_and_routes(plane: Plane) -> None:
    client = asyncio.run(_subscribe(plane, WAYPOINT_ID, LISTENER, WAYPOINT_LISTENER))
    held = client.types[LISTENER].resources
    assert set(held) == {WAYPOINT_LISTENER}
    listener = listener_pb2.Listener()
    assert held[WAYPOINT_LISTENER].resource.Unpack(listener)
    (chain,) = listener.filter_chains
    assert chain.name == f"{HOST}:9080" and chain.filter_chain_match.destination_port.value == 9080
    assert chain.filter_chain_match.prefix_ranges[0].prefix_len.value == 32
    manager = hcm.HttpConnectionManager()
    assert chain.filters[0].typed_config.Unpack(manager)
    assert manager.rds.route_config_name == ROUTE_NAME
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.rbac",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    routes = asyncio.run(_subscribe(plane, WAYPOINT_ID, ROUTE, ROUTE_NAME)).types[ROUTE].resources
    config = route_pb2.RouteConfiguration()
    assert routes[ROUTE_NAME].resource.Unpack(config)
    assert config.virtual_hosts[0].routes[-1].route.cluster == f"inbound-vip|9080||{HOST}"


def test_another_identity_gets_nothing(plane: Plane) -> None:
    client = asyncio.run(_subscribe(plane, SLEEP_ID, LISTENER, WAYPOINT_LISTENER))
    assert client.types[LISTENER].resources == {}
    log = (plane.istiod.state_dir / "mesh-xds.log").read_text()
    assert "waypoint resource refused" in log
