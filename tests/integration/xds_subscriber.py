"""A client holding a workload certificate that subscribes to a real mesh-xds by delta ADS, as a
waypoint or an ingress gateway does (test_xds_waypoint.py, test_xds_ingress.py), and the plane it
talks to: istiod, mesh-ca, node-1 with the test's pods, mesh-xds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from mesh.certs.ca_client import CaClient
from mesh.certs.csr import make_csr
from mesh.grpc_client import open_channel, tls_context
from mesh.identity import Identity
from mesh.xds.delta_client import DeltaClient
from tests import harness


@dataclass
class Plane:
    """istiod and mesh-xds, and the certificate of each identity a test subscribes as."""

    istiod: harness.Istiod
    xds: harness.MeshXds
    credentials: dict[str, tuple[bytes, bytes, bytes]]  # identity -> (roots, chain, key)


def create(api: httpx.Client, path: str, body: dict) -> dict:
    """POST `body` to `path`, which must create it."""
    response = api.post(path, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def create_pod(api: httpx.Client, namespace: str, name: str, sa: str, labels: dict[str, str]) -> None:
    """A pod of service account `sa` on node-1."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "node-1", "serviceAccountName": sa, "containers": [{"name": "c"}]},
    }
    create(api, f"/api/v1/namespaces/{namespace}/pods", body)


def workload_certificate(ca: harness.MeshCa, token: str, identity: Identity) -> tuple[bytes, bytes, bytes]:
    """A workload certificate from mesh-ca, asked for with the node's token (a pod of that
    service account runs on the node): (roots, chain, key), PEM."""
    pair = make_csr(identity)

    async def issue() -> list[str]:
        async with CaClient(ca.address, ca.roots_pem, token) as client:
            return await client.create_certificate(pair.csr_pem, 3600, str(identity))

    chain = "".join(pem if pem.endswith("\n") else pem + "\n" for pem in asyncio.run(issue()))
    return ca.roots_pem, chain.encode(), pair.key_pem


@contextlib.contextmanager
def running_plane(
    tmp: Path, pods: list[tuple[str, Identity, dict[str, str]]], configure: Callable[[httpx.Client], None]
) -> Iterator[Plane]:
    """istiod and mesh-ca; the (name, identity, labels) pods on node-1, then `configure(api)`; a
    certificate per pod's identity; then mesh-xds."""
    with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod) as ca:
        token = harness.create_node(istiod, "node-1")
        with istiod.client() as api:
            for name, identity, labels in pods:
                create_pod(api, identity.namespace, name, identity.service_account, labels)
            configure(api)
        credentials = {str(i): workload_certificate(ca, token, i) for _, i, _ in pods}
        with harness.running_xds(istiod) as xds:
            yield Plane(istiod, xds, credentials)


async def subscribe(
    plane: Plane, identity: Identity, type_url: str, name: str, node: str, metadata: dict[str, str]
) -> DeltaClient:
    """A delta ADS stream with `identity`'s certificate, as proxy `node` with `metadata`, subscribed
    to one name, until the server answered it (with the resource, or by naming it removed)."""
    roots, chain, key = plane.credentials[str(identity)]
    async with open_channel(plane.xds.mtls_address, tls_context(roots, chain, key)) as channel:
        client = DeltaClient(channel, node, metadata=metadata)
        client.watch(type_url, wildcard=False, names=[name])
        task = asyncio.create_task(client.run_once())
        try:
            await client.wait_for(lambda: client.types[type_url].acked > 0, 10)
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    return client
