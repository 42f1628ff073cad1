"""A waypoint's configuration from a real mesh-xds (with istiod and mesh-ca): a client holding the
waypoint's certificate subscribes by delta ADS to its Listener by name and gets a filter chain per
bound Service (with the RBAC filter of a targetRefs policy) and the chain's routes; a client with
another identity is answered as if the Listener did not exist."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from mesh.certs.ca_client import CaClient
from mesh.certs.csr import make_csr
from mesh.identity import Identity
from mesh.xds.delta_client import DeltaClient
from tests import harness

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


@dataclass
class Plane:
    istiod: harness.Istiod
    xds: harness.MeshXds
    credentials: dict[str, tuple[bytes, bytes, bytes]]  # identity -> (roots, chain, key)


def _create(api, path: str, body: dict) -> dict:
    response = api.post(path, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _pod(api, name: str, sa: str, labels: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "node-1", "serviceAccountName": sa, "containers": [{"name": "c"}]},
    }
    _create(api, f"/api/v1/namespaces/{NS}/pods", body)


def _certificate(ca: harness.MeshCa, token: str, identity: Identity) -> tuple[bytes, bytes, bytes]:
    """A workload certificate from mesh-ca, asked for with the node's token (a pod of that
    service account runs on the node)."""
    pair = make_csr(identity)

    async def issue() -> list[str]:
        async with CaClient(ca.address, ca.roots_pem, token) as client:
            return await client.create_certificate(pair.csr_pem, 3600, str(identity))

    chain = "".join(pem if pem.endswith("\n") else pem + "\n" for pem in asyncio.run(issue()))
    return ca.roots_pem, chain.encode(), pair.key_pem


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
    _create(api, gateways, gateway)
    status = {"status": {"addresses": [{"type": "IPAddress", "value": "198.19.0.200"}]}}
    response = api.patch(f"{gateways}/waypoint/status", json=status, headers=MERGE)
    assert response.status_code == 200, response.text
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "reviews", "labels": {"istio.io/use-waypoint": "waypoint"}},
        "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
    }
    _create(api, f"/api/v1/namespaces/{NS}/services", service)
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
    _create(api, f"/apis/security.istio.io/v1/namespaces/{NS}/authorizationpolicies", policy)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    tmp = tmp_path_factory.mktemp("xds-waypoint")
    with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod) as ca:
        token = harness.create_node(istiod, "node-1")
        with istiod.client() as api:
            _pod(api, "waypoint-0", WAYPOINT_ID.service_account, {"gateway.networking.k8s.io/gateway-name": "waypoint"})
            _pod(api, "sleep", SLEEP_ID.service_account, {"app": "sleep"})
            _configure(api)
        credentials = {str(i): _certificate(ca, token, i) for i in (WAYPOINT_ID, SLEEP_ID)}
        with harness.running_xds(istiod) as xds:
            yield Plane(istiod, xds, credentials)


async def _subscribe(plane: Plane, identity: Identity, type_url: str, name: str) -> DeltaClient:
    """A delta ADS stream with `identity`'s certificate, subscribed to one name, until the server
    answered it (with the resource, or by naming it removed)."""
    roots, chain, key = plane.credentials[str(identity)]
    credentials = grpc.ssl_channel_credentials(roots, key, chain)
    async with grpc.aio.secure_channel(plane.xds.mtls_address, credentials) as channel:
        client = DeltaClient(
            channel,
            f"waypoint~198.18.0.9~waypoint-0.{NS}~{NS}.svc.cluster.local",
            metadata={"NAMESPACE": NS, "NAME": "waypoint-0", "WAYPOINT": f"{NS}/waypoint"},
        )
        client.watch(type_url, wildcard=False, names=[name])
        task = asyncio.create_task(client.run_once())
        try:
            await client.wait_for(lambda: client.types[type_url].acked > 0, 10)
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    return client


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
