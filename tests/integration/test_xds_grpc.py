"""Proxyless gRPC against mesh-xds: a stock grpcio client (`xds:///…`, state-of-the-world ADS,
mTLS with a workload certificate from mesh-ca) calling two backends registered as Pods.

Backends are gRPC servers of this process on 127.0.0.2 and 127.0.0.3 (one port number on both, as
behind one targetPort); each answers `/mesh.test.Echo/Who` with its own name. The client runs in
a subprocess (grpc_xds_client.py) since GRPC_XDS_BOOTSTRAP is read once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.config.listener.v3 import listener_pb2

from mesh.certs.ca_client import CaClient
from mesh.certs.csr import make_csr
from mesh.grpc_client import open_channel, tls_context
from mesh.identity import Identity
from mesh.xds.delta_client import DeltaClient
from tests import harness

pytestmark = pytest.mark.integration

NS = "default"
TARGET = f"xds:///greeter.{NS}.svc.cluster.local"
PODS = f"/api/v1/namespaces/{NS}/pods"
SERVICES = f"/api/v1/namespaces/{NS}/services"
HTTP_ROUTES = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes"
GRPC_ROUTES = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/grpcroutes"
VIRTUAL_SERVICES = f"/apis/networking.istio.io/v1/namespaces/{NS}/virtualservices"
MERGE = {"Content-Type": "application/merge-patch+json"}
CLIENT_SCRIPT = Path(__file__).with_name("grpc_xds_client.py")
CLIENT_ID = Identity("cluster.local", NS, "grpc-client")
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"


# --- backends -------------------------------------------------------------------------------------


class _Who(grpc.GenericRpcHandler):
    """Answers /mesh.test.Echo/Who (raw bytes in and out) with the server's name."""

    def __init__(self, name: str):
        self.name = name.encode()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method == "/mesh.test.Echo/Who":
            return grpc.unary_unary_rpc_method_handler(lambda _request, _context: self.name)
        return None


def _free_port_on_both(ips: tuple[str, ...]) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind((ips[0], 0))
            port = s.getsockname()[1]
        with contextlib.ExitStack() as stack:
            try:
                for ip in ips[1:]:
                    probe = stack.enter_context(socket.socket())
                    probe.bind((ip, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free on every backend address")


@contextlib.contextmanager
def backends(names_ips: dict[str, str]) -> Iterator[int]:
    """One gRPC server per (name, loopback IP), all on the same port; yields the port."""
    port = _free_port_on_both(tuple(names_ips.values()))
    servers = []
    for name, ip in names_ips.items():
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[_Who(name)])
        server.add_insecure_port(f"{ip}:{port}")
        server.start()
        servers.append(server)
    try:
        yield port
    finally:
        for server in servers:
            server.stop(0)


# --- the client subprocess ------------------------------------------------------------------------


class GrpcClient:
    """The JSON-lines client of grpc_xds_client.py."""

    def __init__(self, bootstrap: Path, log: Path):
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # loopback only, no proxy
        env["GRPC_XDS_BOOTSTRAP"] = str(bootstrap)
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, str(CLIENT_SCRIPT), TARGET],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("ab"),
            env=env,
            text=True,
        )
        assert json.loads(self._line(60)) == {"ready": True}

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise AssertionError(f"gRPC client gave no answer\n{self.log.read_text()[-3000:]}")
        return result[0]

    def send(self, **command) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 120) -> dict:
        return json.loads(self._line(timeout))

    def calls(self, n: int, metadata: dict[str, str] | None = None) -> dict:
        self.send(op="calls", n=n, metadata=metadata or {})
        return self.result()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the mesh ---------------------------------------------------------------------------------------


@dataclass
class Mesh:
    istiod: harness.Istiod
    xds: harness.MeshXds
    client: GrpcClient
    credentials: tuple[Path, Path, Path]  # roots, chain, key


def _pod(client, name: str, ip: str | None, sa: str, labels: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "node-1", "serviceAccountName": sa, "containers": [{"name": "c"}]},
    }
    assert client.post(PODS, json=body).status_code == 201
    if ip is not None:  # status.podIP and the phase go through the status subresource, as a kubelet writes them
        status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
        assert client.patch(f"{PODS}/{name}/status", json=status, headers=MERGE).status_code == 200


def _service(client, name: str, selector: dict[str, str], port: int) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"name": "grpc", "port": 50051, "targetPort": port}]},
    }
    assert client.post(SERVICES, json=body).status_code == 201


def _workload_certificate(ca: harness.MeshCa, token: str, directory: Path) -> tuple[Path, Path, Path]:
    """A certificate for the client pod's identity, from mesh-ca with the node's token."""
    pair = make_csr(CLIENT_ID)

    async def issue() -> list[str]:
        async with CaClient(ca.address, ca.roots_pem, token) as client:
            return await client.create_certificate(pair.csr_pem, 3600, str(CLIENT_ID))

    chain = asyncio.run(issue())
    roots, chain_file, key = directory / "root-cert.pem", directory / "cert-chain.pem", directory / "key.pem"
    roots.write_bytes(ca.roots_pem)
    chain_file.write_text("".join(pem if pem.endswith("\n") else pem + "\n" for pem in chain))
    key.write_bytes(pair.key_pem)
    return roots, chain_file, key


def _bootstrap(xds: harness.MeshXds, credentials: tuple[Path, Path, Path], path: Path) -> Path:
    roots, chain, key = credentials
    config = {
        "xds_servers": [
            {
                "server_uri": xds.mtls_address,  # the port that asks for (and requires) a client certificate
                "channel_creds": [
                    {
                        "type": "tls",
                        "config": {
                            "ca_certificate_file": str(roots),
                            "certificate_file": str(chain),
                            "private_key_file": str(key),
                        },
                    }
                ],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": "grpc-client~default", "cluster": "grpc-client"},
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("xds-grpc")
    with (
        harness.running_istiod(tmp, "sqlite") as istiod,
        harness.running_ca(istiod) as ca,
        backends({"backend-a": "127.0.0.2", "backend-b": "127.0.0.3"}) as port,
    ):
        token = harness.create_node(istiod, "node-1")
        with istiod.client() as api:
            _pod(api, "backend-a", "127.0.0.2", "greeter", {"app": "greeter", "version": "a"})
            _pod(api, "backend-b", "127.0.0.3", "greeter", {"app": "greeter", "version": "b"})
            _pod(api, "grpc-client", None, CLIENT_ID.service_account, {"app": "grpc-client"})
            _service(api, "greeter", {"app": "greeter"}, port)
            _service(api, "greeter-a", {"app": "greeter", "version": "a"}, port)
            _service(api, "greeter-b", {"app": "greeter", "version": "b"}, port)
        credentials = _workload_certificate(ca, token, tmp)
        with harness.running_xds(istiod) as xds:
            client = GrpcClient(_bootstrap(xds, credentials, tmp / "bootstrap.json"), tmp / "grpc-client.log")
            try:
                yield Mesh(istiod, xds, client, credentials)
            finally:
                client.close()


# --- helpers ----------------------------------------------------------------------------------------


def _grpc_stream(xds: harness.MeshXds) -> dict:
    streams = [s for s in xds.syncz() if s["protocol"] == "sotw" and s["identity"] == str(CLIENT_ID)]
    assert len(streams) == 1, streams
    return streams[0]


def _routes_version(xds: harness.MeshXds) -> int:
    return _grpc_stream(xds)["types"]["RDS"]["current_version"]


def _await_push(xds: harness.MeshXds, before: int) -> None:
    """Wait until the client has ACKed a RouteConfiguration table newer than `before`."""

    def synced() -> bool:
        rds = _grpc_stream(xds)["types"]["RDS"]
        return rds["current_version"] > before and rds["status"] == "SYNCED"

    harness.wait_for(synced, 10, "the gRPC client to ACK the new routes")
    time.sleep(0.2)  # the ACK leaves as the channel switches to the new config


def _http_route(name: str, rules: list[dict]) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "greeter", "port": 50051}], "rules": rules},
    }


def _backend(name: str, weight: int | None = None) -> dict:
    ref = {"name": name, "port": 50051}
    return ref if weight is None else {**ref, "weight": weight}


@contextlib.contextmanager
def configured(mesh: Mesh, path: str, body: dict) -> Iterator[None]:
    """Create an object, wait for the client to have it; delete it (and wait) afterwards."""
    with mesh.istiod.client() as api:
        before = _routes_version(mesh.xds)
        response = api.post(path, json=body)
        assert response.status_code == 201, response.text
        _await_push(mesh.xds, before)
        try:
            yield
        finally:
            before = _routes_version(mesh.xds)
            api.delete(f"{path}/{body['metadata']['name']}")
            _await_push(mesh.xds, before)


# --- tests ------------------------------------------------------------------------------------------


def test_calls_spread_across_both_backends(mesh: Mesh) -> None:
    result = mesh.client.calls(1000)
    print("round robin:", result)
    assert result["errors"] == {}
    assert set(result["backends"]) == {"backend-a", "backend-b"}
    assert abs(result["backends"]["backend-a"] - 500) <= 60


def test_an_http_route_weighted_80_20(mesh: Mesh) -> None:
    route = _http_route("weighted", [{"backendRefs": [_backend("greeter-a", 80), _backend("greeter-b", 20)]}])
    with configured(mesh, HTTP_ROUTES, route):
        result = mesh.client.calls(1000)
    print("weighted 80/20:", result)
    assert result["errors"] == {}
    assert abs(result["backends"].get("backend-a", 0) - 800) <= 60
    assert result["backends"]["backend-a"] + result["backends"]["backend-b"] == 1000


def test_a_header_match_pins_calls_to_one_backend(mesh: Mesh) -> None:
    rules = [
        {"matches": [{"headers": [{"name": "x-tier", "value": "gold"}]}], "backendRefs": [_backend("greeter-b")]},
        {"backendRefs": [_backend("greeter-a")]},
    ]
    with configured(mesh, HTTP_ROUTES, _http_route("tiers", rules)):
        gold = mesh.client.calls(200, {"x-tier": "gold"})
        plain = mesh.client.calls(200)
    print("header match:", gold, plain)
    assert gold == {"backends": {"backend-b": 200}, "errors": {}}
    assert plain == {"backends": {"backend-a": 200}, "errors": {}}


def test_a_grpc_route_method_match_pins_calls_to_one_backend(mesh: Mesh) -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": "who"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "greeter"}],
            "rules": [
                {
                    "matches": [{"method": {"service": "mesh.test.Echo", "method": "Who"}}],
                    "backendRefs": [_backend("greeter-b")],
                }
            ],
        },
    }
    with configured(mesh, GRPC_ROUTES, route):
        result = mesh.client.calls(100)
    assert result == {"backends": {"backend-b": 100}, "errors": {}}


def test_a_virtual_service_fault_abort_of_50_percent(mesh: Mesh) -> None:
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "flaky"},
        "spec": {
            "hosts": ["greeter"],
            "http": [
                {
                    "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 50}}},
                    "route": [{"destination": {"host": "greeter"}}],
                }
            ],
        },
    }
    with configured(mesh, VIRTUAL_SERVICES, vs):
        result = mesh.client.calls(1000)
    print("fault abort 50%:", result)
    assert set(result["errors"]) == {"UNAVAILABLE"}  # HTTP 503 as gRPC maps it
    assert abs(result["errors"]["UNAVAILABLE"] - 500) <= 60
    assert set(result["backends"]) == {"backend-a", "backend-b"}


def test_a_route_changed_through_the_api_changes_behaviour_live_without_failures(mesh: Mesh) -> None:
    route = _http_route("live", [{"backendRefs": [_backend("greeter-a")]}])
    with configured(mesh, HTTP_ROUTES, route):
        mesh.client.send(op="loop", seconds=5)
        time.sleep(2)
        with mesh.istiod.client() as api:
            patch = {"spec": {"rules": [{"backendRefs": [_backend("greeter-b")]}]}}
            response = api.patch(f"{HTTP_ROUTES}/live", json=patch, headers=MERGE)
            assert response.status_code == 200, response.text
        result = mesh.client.result()
    sequence = result["sequence"]
    switch = sequence.index("backend-b")
    print(f"live change: {len(sequence)} calls, switched after {switch}, errors {result['errors']}")
    assert result["errors"] == {}
    assert switch > 100 and set(sequence[:switch]) == {"backend-a"}
    assert len(sequence) - switch > 100 and set(sequence[switch:]) == {"backend-b"}


DESTINATION_RULES = f"/apis/networking.istio.io/v1/namespaces/{NS}/destinationrules"


def _no_nacks(mesh: Mesh) -> None:
    assert all(t["last_nack"] is None for t in _grpc_stream(mesh.xds)["types"].values()), _grpc_stream(mesh.xds)


def test_gateway_route_extras_are_accepted_by_grpc(mesh: Mesh) -> None:
    rule = {
        "matches": [
            {
                "path": {"type": "PathPrefix", "value": "/mesh.test.Echo"},
                "headers": [{"name": "x-re", "type": "RegularExpression", "value": "go+d"}],
            }
        ],
        "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-set", "value": "1"}]}}
        ],
        "timeouts": {"request": "3s"},
        "retry": {"codes": [503], "attempts": 2, "backoff": "50ms"},
        "backendRefs": [_backend("greeter-b")],
    }
    with configured(mesh, HTTP_ROUTES, _http_route("extras", [rule])):
        _no_nacks(mesh)
        assert mesh.client.calls(50, {"x-re": "goood"}) == {"backends": {"backend-b": 50}, "errors": {}}
        assert set(mesh.client.calls(50)["backends"]) == {"backend-a", "backend-b"}


def test_virtual_service_and_destination_rule_extras_are_accepted_by_grpc(mesh: Mesh) -> None:
    dr = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "greeter"},
        "spec": {
            "host": "greeter",
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}},
            "subsets": [{"name": "a", "labels": {"version": "a"}}, {"name": "b", "labels": {"version": "b"}}],
        },
    }
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "extras"},
        "spec": {
            "hosts": ["greeter.default.svc.cluster.local"],
            "http": [
                {
                    "match": [{"uri": {"regex": "/mesh\\.test\\..*"}, "headers": {"x-canary": {"exact": "yes"}}}],
                    "route": [{"destination": {"host": "greeter", "subset": "b"}}],
                    "timeout": "2s",
                    "retries": {"attempts": 2, "perTryTimeout": "1s"},
                    "headers": {"request": {"add": {"x-added": "1"}}},
                },
                {
                    "match": [{"withoutHeaders": {"x-user": {}}}],
                    "fault": {"delay": {"fixedDelay": "1ms", "percentage": {"value": 100}}},
                    "route": [{"destination": {"host": "greeter", "subset": "a"}}],
                },
                {"route": [{"destination": {"host": "greeter"}}]},
            ],
        },
    }
    with configured(mesh, DESTINATION_RULES, dr), configured(mesh, VIRTUAL_SERVICES, vs):
        _no_nacks(mesh)
        assert mesh.client.calls(50, {"x-canary": "yes", "x-user": "u"}) == {
            "backends": {"backend-b": 50},
            "errors": {},
        }
        assert mesh.client.calls(50) == {"backends": {"backend-a": 50}, "errors": {}}  # no x-user: subset a
        pinned = [mesh.client.calls(20, {"x-user": f"user-{i}"})["backends"] for i in range(16)]
        assert all(len(backends) == 1 for backends in pinned)  # ring hash: one user, one backend
        assert {name for backends in pinned for name in backends} == {"backend-a", "backend-b"}


def test_proxy_status_shows_the_grpc_client_synced(mesh: Mesh) -> None:
    stream = _grpc_stream(mesh.xds)
    assert stream["kind"] == "workload" and stream["node_id"] == "grpc-client~default"
    assert set(stream["types"]) == {"LDS", "RDS", "CDS", "EDS"}
    assert {t["status"] for t in stream["types"].values()} == {"SYNCED"}
    assert all(t["last_nack"] is None for t in stream["types"].values())


def test_a_workload_certificate_also_reads_envoy_types_over_delta(mesh: Mesh) -> None:
    roots, chain, key = (p.read_bytes() for p in mesh.credentials)

    async def scenario() -> set[str]:
        async with open_channel(mesh.xds.mtls_address, tls_context(roots, chain, key)) as channel:
            client = DeltaClient(channel, "delta-workload")
            client.watch(LISTENER)
            task = asyncio.create_task(client.run_once())
            try:
                await client.wait_for(lambda: client.types[LISTENER].acked > 0, 10)
            finally:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            held = client.types[LISTENER].resources
            for resource in held.values():
                assert resource.resource.Unpack(listener_pb2.Listener())
            return set(held)

    names = asyncio.run(scenario())
    assert {"greeter.default.svc.cluster.local", "greeter.default.svc.cluster.local:50051"} <= names


def test_calls_ride_out_a_kill_9_of_mesh_xds_and_follow_the_restarted_one(mesh: Mesh) -> None:
    """Last in the module: it restarts mesh-xds (same ports). The client keeps calling on its cached
    configuration, reconnects, and its first requests on the new stream are answered (rule 1)."""
    mesh.client.send(op="loop", seconds=3)
    time.sleep(0.5)
    assert mesh.xds.proc is not None
    mesh.xds.proc.send_signal(signal.SIGKILL)
    mesh.xds.proc.wait()
    mesh.xds.proc = None
    result = mesh.client.result()
    assert result["errors"] == {} and set(result["backends"]) == {"backend-a", "backend-b"}
    mesh.xds.start()

    def resynced() -> bool:
        streams = [s for s in mesh.xds.syncz() if s["identity"] == str(CLIENT_ID) and s["protocol"] == "sotw"]
        return len(streams) == 1 and {t["status"] for t in streams[0]["types"].values()} == {"SYNCED"}

    harness.wait_for(resynced, 60, "the gRPC client to resubscribe to the restarted mesh-xds")
    with configured(mesh, HTTP_ROUTES, _http_route("after-restart", [{"backendRefs": [_backend("greeter-b")]}])):
        assert mesh.client.calls(100) == {"backends": {"backend-b": 100}, "errors": {}}
