"""An ingress gateway's configuration from a real mesh-xds (with istiod and mesh-ca): a client holding
the gateway service account's certificate subscribes by delta ADS to `gateway/{N}/{G}` and to the
SDS Secret its HTTPS listener names, and gets the TLS chain and the certificate mesh-xds fetched
from istiod (the change stream carries no Secret data); a new version of the Secret is served
after it changes; a client with another identity gets neither; mesh-xds never logs the key."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from mesh.identity import Identity
from mesh.xds.delta_client import DeltaClient
from tests import minica
from tests.integration.xds_subscriber import Plane, create, running_plane, subscribe

pytestmark = pytest.mark.integration

NS = "default"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
GATEWAY_LISTENER = f"gateway/{NS}/edge"
SDS_NAME = f"kubernetes://{NS}/edge-cert"
GATEWAY_ID = Identity("cluster.local", NS, "edge-istio")
SLEEP_ID = Identity("cluster.local", NS, "sleep")


CERT, KEY = minica.self_signed("web.example.test")
CERT_2, KEY_2 = minica.self_signed("web.example.test")


def tls_secret(cert: bytes, key: bytes) -> dict:
    return minica.tls_secret("edge-cert", cert, key)


def _configure(api) -> None:
    create(api, f"/api/v1/namespaces/{NS}/secrets", tls_secret(CERT, KEY))
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge"},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                {
                    "name": "https",
                    "port": 443,
                    "protocol": "HTTPS",
                    "hostname": "web.example.test",
                    "tls": {"certificateRefs": [{"name": "edge-cert"}]},
                }
            ],
        },
    }
    create(api, f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/gateways", gateway)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    pods = [
        ("edge-0", GATEWAY_ID, {"gateway.networking.k8s.io/gateway-name": "edge"}),
        ("sleep", SLEEP_ID, {"app": "sleep"}),
    ]
    with running_plane(tmp_path_factory.mktemp("xds-ingress"), pods, _configure) as plane:
        yield plane


async def _subscribe(plane: Plane, identity: Identity, type_url: str, name: str) -> DeltaClient:
    """A delta ADS stream as the gateway's pod with `identity`'s certificate (xds_subscriber.py)."""
    node = f"router~198.18.0.9~edge-0.{NS}~{NS}.svc.cluster.local"
    metadata = {"NAMESPACE": NS, "NAME": "edge-0", "WAYPOINT": f"{NS}/edge", "MODE": "ingress"}
    return await subscribe(plane, identity, type_url, name, node, metadata)


def _secret(plane: Plane) -> secret_pb2.Secret | None:
    held = asyncio.run(_subscribe(plane, GATEWAY_ID, SECRET, SDS_NAME)).types[SECRET].resources
    if SDS_NAME not in held:
        return None
    secret = secret_pb2.Secret()
    assert held[SDS_NAME].resource.Unpack(secret)
    return secret


def _eventually_secret(plane: Plane, key: bytes) -> secret_pb2.Secret:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        secret = _secret(plane)
        if secret is not None and secret.tls_certificate.private_key.inline_bytes == key:
            return secret
        time.sleep(0.3)
    raise AssertionError("the gateway never received the expected certificate")


def test_the_gateway_identity_receives_its_tls_chain_and_certificate(plane: Plane) -> None:
    secret = _eventually_secret(plane, KEY)  # fetched from istiod in the background
    assert secret.tls_certificate.certificate_chain.inline_bytes == CERT
    held = asyncio.run(_subscribe(plane, GATEWAY_ID, LISTENER, GATEWAY_LISTENER)).types[LISTENER].resources
    listener = listener_pb2.Listener()
    assert held[GATEWAY_LISTENER].resource.Unpack(listener)
    (chain,) = listener.filter_chains
    assert chain.name == "https" and chain.filter_chain_match.destination_port.value == 443
    assert list(chain.filter_chain_match.server_names) == ["web.example.test"]
    context = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(context)
    assert [c.name for c in context.common_tls_context.tls_certificate_sds_secret_configs] == [SDS_NAME]


def test_a_changed_secret_is_served_in_its_new_version(plane: Plane) -> None:
    _eventually_secret(plane, KEY)
    with plane.istiod.client() as api:
        response = api.put(f"/api/v1/namespaces/{NS}/secrets/edge-cert", json=tls_secret(CERT_2, KEY_2))
        assert response.status_code == 200, response.text
    assert _eventually_secret(plane, KEY_2).tls_certificate.certificate_chain.inline_bytes == CERT_2


def test_another_identity_gets_neither_and_the_key_is_never_logged(plane: Plane) -> None:
    assert _secret(plane) is not None  # the gateway itself does get it
    for type_url, name in ((LISTENER, GATEWAY_LISTENER), (SECRET, SDS_NAME)):
        client = asyncio.run(_subscribe(plane, SLEEP_ID, type_url, name))
        assert client.types[type_url].resources == {}
    log = (plane.istiod.state_dir / "mesh-xds.log").read_text()
    assert "waypoint resource refused" in log
    for key in (KEY, KEY_2):
        for line in key.decode().splitlines()[1:-1]:
            assert line not in log
        assert base64.b64encode(key).decode()[40:80] not in log
