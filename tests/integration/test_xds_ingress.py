"""An ingress gateway's configuration from a real mesh-xds (with istiod and mesh-ca): a client holding
the gateway service account's certificate subscribes by delta ADS to `gateway/{N}/{G}` and to the
SDS Secret its HTTPS listener names, and gets the TLS chain and the certificate mesh-xds fetched
from istiod (the change stream carries no Secret data); a new version of the Secret is served
after it changes; a client with another identity gets neither; mesh-xds never logs the key."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from mesh.certs.ca_client import CaClient
from mesh.certs.csr import make_csr
from mesh.identity import Identity
from mesh.xds.delta_client import DeltaClient
from tests import harness

pytestmark = pytest.mark.integration

NS = "default"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
GATEWAY_LISTENER = f"gateway/{NS}/edge"
SDS_NAME = f"kubernetes://{NS}/edge-cert"
GATEWAY_ID = Identity("cluster.local", NS, "edge-istio")
SLEEP_ID = Identity("cluster.local", NS, "sleep")


def key_pair(host: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for `host` and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


CERT, KEY = key_pair("web.example.test")
CERT_2, KEY_2 = key_pair("web.example.test")


def tls_secret(cert: bytes, key: bytes) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "edge-cert"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()},
    }


@dataclass
class Plane:
    istiod: harness.Istiod
    xds: harness.MeshXds
    credentials: dict[str, tuple[bytes, bytes, bytes]]  # identity -> (roots, chain, key)


def _create(api, path: str, body: dict) -> None:
    response = api.post(path, json=body)
    assert response.status_code == 201, response.text


def _pod(api, name: str, sa: str, labels: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "node-1", "serviceAccountName": sa, "containers": [{"name": "c"}]},
    }
    _create(api, f"/api/v1/namespaces/{NS}/pods", body)


def _certificate(ca: harness.MeshCa, token: str, identity: Identity) -> tuple[bytes, bytes, bytes]:
    """A workload certificate from mesh-ca, asked for with the node's token."""
    pair = make_csr(identity)

    async def issue() -> list[str]:
        async with CaClient(ca.address, ca.roots_pem, token) as client:
            return await client.create_certificate(pair.csr_pem, 3600, str(identity))

    chain = "".join(pem if pem.endswith("\n") else pem + "\n" for pem in asyncio.run(issue()))
    return ca.roots_pem, chain.encode(), pair.key_pem


def _configure(api) -> None:
    _create(api, f"/api/v1/namespaces/{NS}/secrets", tls_secret(CERT, KEY))
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
    _create(api, f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/gateways", gateway)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    tmp = tmp_path_factory.mktemp("xds-ingress")
    with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod) as ca:
        token = harness.create_node(istiod, "node-1")
        with istiod.client() as api:
            _pod(api, "edge-0", GATEWAY_ID.service_account, {"gateway.networking.k8s.io/gateway-name": "edge"})
            _pod(api, "sleep", SLEEP_ID.service_account, {"app": "sleep"})
            _configure(api)
        credentials = {str(i): _certificate(ca, token, i) for i in (GATEWAY_ID, SLEEP_ID)}
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
            f"router~198.18.0.9~edge-0.{NS}~{NS}.svc.cluster.local",
            metadata={"NAMESPACE": NS, "NAME": "edge-0", "WAYPOINT": f"{NS}/edge", "MODE": "ingress"},
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
