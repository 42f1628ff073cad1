"""The waypoint process end to end on loopback: a real `waypoint` subprocess with its certificate
from a real mesh-ca, Envoy resources from an ADS server in the test (mTLS with mesh-xds's serving
certificate, the waypoint's client certificate required), backends that are real HBONE servers
(mesh/hbone) answering HTTP/1.1, and a client speaking HBONE with sleep's certificate.

The waypoint asks mesh-ca with a node token and `--impersonate` (a waypoint pod on the node):
istiod has no ServiceAccount TokenRequest endpoint yet (helper A's), so the contract's
service-account token cannot be had here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import h11
import httpx
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, struct_pb2
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded
from prometheus_client.parser import text_string_to_metric_families

from dataplane.waypoint.proxy.byte_stream import HboneBytes
from dataplane.waypoint.proxy.downstream_h1 import serve_h1
from dataplane.waypoint.proxy.messages import HttpRequest, HttpResponse
from mesh.certs.ca_client import CaClient
from mesh.certs.manager import CertificateManager
from mesh.clock import SystemClock
from mesh.hbone import HboneClient, HboneServer, client_context, server_context
from mesh.identity import Identity
from tests import harness

pytestmark = pytest.mark.integration

VIP, PORT = "10.96.0.10", 80
HOST = "echo.default.svc.cluster.local"
ROUTES = f"inbound-vip|{PORT}|http|{HOST}"
V1, V2 = f"inbound-vip|{PORT}|v1|{HOST}", f"inbound-vip|{PORT}|v2|{HOST}"
SLEEP = Identity("cluster.local", "default", "sleep")
ECHO = Identity("cluster.local", "default", "echo")
WAYPOINT = Identity("cluster.local", "default", "waypoint")
WP_IP = "127.0.0.4"
BACKENDS = {"127.0.0.2": "v1", "127.0.0.3": "v2"}


def _any(msg) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def resources() -> dict[str, dict[str, object]]:
    """The contract's shape: a GET-only ALLOW for sleep, a 90/10 split on /split."""
    allow = http_rbac_pb2.RBAC(rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW))
    policy = allow.rules.policies["default.allow-get"]
    method = policy.permissions.add().header
    method.name, method.string_match.exact = ":method", "GET"
    policy.principals.add().authenticated.principal_name.CopyFrom(string_pb2.StringMatcher(exact=str(SLEEP)))
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=f"{HOST}:{PORT}", rds=hcm_pb2.Rds(route_config_name=ROUTES))
    hcm.http_filters.add(name="envoy.filters.http.rbac", typed_config=_any(allow))
    hcm.http_filters.add(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))
    chain = listener_components_pb2.FilterChain(name=f"{HOST}:{PORT}")
    chain.filter_chain_match.prefix_ranges.add(address_prefix=VIP).prefix_len.value = 32
    chain.filter_chain_match.destination_port.value = PORT
    chain.filters.add(name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm))
    listener = listener_pb2.Listener(name="waypoint/default/wp", filter_chains=[chain])
    vhost = route_components_pb2.VirtualHost(name=HOST, domains=["*"])
    split = vhost.routes.add(name="split", match=route_components_pb2.RouteMatch(prefix="/split"))
    for name, weight in ((V1, 90), (V2, 10)):
        split.route.weighted_clusters.clusters.add(name=name).weight.value = weight
    vhost.routes.add(name="default", match=route_components_pb2.RouteMatch(prefix="/")).route.cluster = V1
    routes = route_pb2.RouteConfiguration(name=ROUTES, virtual_hosts=[vhost])
    ads = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())
    clusters, assignments = {}, {}
    for name, ip in ((V1, "127.0.0.2"), (V2, "127.0.0.3")):
        cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
        cluster.eds_cluster_config.eds_config.CopyFrom(ads)
        clusters[name] = cluster
        lb = endpoint_components_pb2.LbEndpoint()
        lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value = ip, 8080
        lb.metadata.filter_metadata["istio"].CopyFrom(
            struct_pb2.Struct(
                fields={
                    "tunnel": struct_pb2.Value(string_value="hbone"),
                    "identity": struct_pb2.Value(string_value=str(ECHO)),
                }
            )
        )
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
        cla.endpoints.add().lb_endpoints.append(lb)
        assignments[name] = cla
    return {
        "type.googleapis.com/envoy.config.listener.v3.Listener": {listener.name: listener},
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": {ROUTES: routes},
        "type.googleapis.com/envoy.config.cluster.v3.Cluster": clusters,
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": assignments,
    }


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Answers by-name delta subscriptions from a fixed set of resources; records what it saw."""

    def __init__(self) -> None:
        self.resources = resources()
        self.nodes: list[str] = []
        self.peers: list[str] = []
        self.nacks: list[str] = []

    async def DeltaAggregatedResources(self, request_iterator, context):
        self.peers.append(str(context.auth_context().get("x509_common_name") or context.peer_identities()))
        nonce = 0
        async for request in request_iterator:
            if request.node.id:
                self.nodes.append(request.node.id)
            if request.error_detail.message:
                self.nacks.append(request.error_detail.message)
            held = self.resources.get(request.type_url, {})
            found = [
                discovery_pb2.Resource(name=n, version="1", resource=_any(held[n]))
                for n in request.resource_names_subscribe
                if n in held
            ]
            if found:
                nonce += 1
                yield discovery_pb2.DeltaDiscoveryResponse(type_url=request.type_url, resources=found, nonce=str(nonce))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[harness.Istiod, harness.MeshCa, str, Path]]:
    tmp = tmp_path_factory.mktemp("waypoint")
    with harness.running_istiod(tmp, "sqlite") as istiod, harness.running_ca(istiod) as ca:
        token = harness.create_node(istiod, "node-1")
        with istiod.client() as client:
            for name, sa in (("wp-0", "waypoint"), ("sleep-0", "sleep"), ("echo-0", "echo")):
                body = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"serviceAccountName": sa, "nodeName": "node-1", "containers": [{"name": "c"}]},
                }
                assert client.post("/api/v1/namespaces/default/pods", json=body).status_code == 201
        token_file = tmp / "token"
        token_file.write_text(token)
        yield istiod, ca, token, token_file


async def http1(stream: HboneBytes, conn: h11.Connection, method: str, path: str) -> tuple[int, bytes]:
    """One HTTP/1.1 exchange on a kept-alive tunnel."""
    host = f"{HOST}:{PORT}"
    await stream.write(conn.send(h11.Request(method=method, target=path, headers=[("host", host)])))
    await stream.write(conn.send(h11.EndOfMessage()))
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.read())
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            conn.start_next_cycle()
            return status, body


async def http2_get(stream: HboneBytes, path: str) -> tuple[int, bytes]:
    conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", HOST)], end_stream=True
    )
    await stream.write(conn.data_to_send())
    status, body = 0, b""
    for _ in range(100):
        for event in conn.receive_data(await stream.read()):
            if isinstance(event, ResponseReceived):
                status = int(dict(event.headers)[":status"])
            elif isinstance(event, DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, StreamEnded):
                return status, body
        await stream.write(conn.data_to_send())
    raise AssertionError("no HTTP/2 response")


def test_waypoint_rbac_split_metrics_http2(mesh) -> None:
    _istiod, ca, token, token_file = mesh
    ports = {name: harness.free_port() for name in ("hbone", "admin", "metrics", "ready", "backend", "ads")}
    state = ca.state_dir

    async def scenario() -> None:
        certs = CertificateManager(lambda: CaClient(ca.address, ca.roots_pem, token), SystemClock(), "cluster.local")
        async with certs:
            sleep, echo = await certs.get(SLEEP), await certs.get(ECHO)
        roots = ca.roots_pem

        # Backends: HBONE servers with echo's certificate answering their version name.
        async def answer(name: str):
            async def respond(request: HttpRequest) -> HttpResponse:
                return HttpResponse(200, [("content-type", "text/plain")], name.encode())

            return respond

        async def handle(stream) -> None:
            stream.accept()
            name = BACKENDS[stream.local_address[0]]
            tunnel = HboneBytes(stream)
            await serve_h1(tunnel, await tunnel.read(), await answer(name))

        backend = HboneServer(server_context("".join(echo.chain), echo.key_pem, roots), handle)
        for ip in BACKENDS:
            await backend.listen(ip, ports["backend"])
        ads = Ads()
        server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
        creds = grpc.ssl_server_credentials(
            [((state / "xds-key.pem").read_bytes(), (state / "xds-cert.pem").read_bytes())],
            root_certificates=roots,
            require_client_auth=True,
        )
        server.add_secure_port(f"127.0.0.1:{ports['ads']}", creds)
        await server.start()
        env = {
            **os.environ,
            "MESH_POD_NAME": "wp-0",
            "MESH_POD_NAMESPACE": "default",
            "MESH_POD_IP": WP_IP,
            "MESH_SERVICE_ACCOUNT": "waypoint",
            "MESH_TOKEN_FILE": str(token_file),
            "MESH_ROOT_CERT": str(state / "root-cert.pem"),
            "MESH_CA_ADDRESS": ca.address,
            "MESH_XDS_ADDRESS": f"127.0.0.1:{ports['ads']}",
        }
        log = (state / "waypoint.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            str(harness.VENV_BIN / "waypoint"),
            "--gateway",
            "default/wp",
            "--listen-address",
            WP_IP,
            "--hbone-port",
            str(ports["hbone"]),
            "--admin-port",
            str(ports["admin"]),
            "--metrics-port",
            str(ports["metrics"]),
            "--readiness-port",
            str(ports["ready"]),
            "--hbone-upstream-port",
            str(ports["backend"]),
            "--impersonate",
            "--drain-seconds",
            "1",
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            async with httpx.AsyncClient() as web:
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await web.get(f"http://{WP_IP}:{ports['ready']}/healthz/ready")).status_code == 200:
                            break
                    assert proc.returncode is None, (state / "waypoint.log").read_text()[-3000:]
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("waypoint not ready: " + (state / "waypoint.log").read_text()[-3000:])
                assert ads.nodes[0] == f"waypoint~{WP_IP}~wp-0.default~default.svc.cluster.local"
                assert not ads.nacks

                ctx = client_context("".join(sleep.chain), sleep.key_pem, roots)
                client = await HboneClient.connect((WP_IP, ports["hbone"]), ctx, expected_identities={str(WAYPOINT)})
                tunnel = HboneBytes(await client.open(f"{VIP}:{PORT}"))
                conn = h11.Connection(h11.CLIENT)
                assert await http1(tunnel, conn, "GET", "/hello") == (200, b"v1")
                assert await http1(tunnel, conn, "DELETE", "/hello") == (403, b"RBAC: access denied")
                seen = Counter([(await http1(tunnel, conn, "GET", "/split"))[1] for _ in range(200)])
                assert seen[b"v1"] + seen[b"v2"] == 200
                assert 160 <= seen[b"v1"] <= 195, seen  # 90 % of 200 = 180; binomial sd ~4.2

                h2_tunnel = HboneBytes(await client.open(f"{VIP}:{PORT}"))
                assert await http2_get(h2_tunnel, "/over-h2") == (200, b"v1")

                with pytest.raises(Exception, match="503"):
                    await client.open("10.96.0.99:80")  # no filter chain: 503 at CONNECT
                client.close()

                scrape = (await web.get(f"http://{WP_IP}:{ports['metrics']}/stats/prometheus")).text
                families = {f.name: f for f in text_string_to_metric_families(scrape)}
                samples = [s for s in families["istio_requests"].samples if s.name == "istio_requests_total"]
                denied = [s for s in samples if s.labels["response_code"] == "403"]
                assert denied and denied[0].value == 1
                assert denied[0].labels["source_principal"] == str(SLEEP)
                assert denied[0].labels["reporter"] == "waypoint"
                assert denied[0].labels["destination_service"] == HOST
                assert sum(s.value for s in samples if s.labels["response_code"] == "200") == 202

                dump = (await web.get(f"http://{WP_IP}:{ports['admin']}/config_dump")).json()
                assert dump["certificate"]["identity"] == str(WAYPOINT) and dump["certificate"]["serial"]
                assert {e["address"] for e in dump["clusters"][V2]["endpoints"]} == {"127.0.0.3:8080"}
                assert (await web.post(f"http://{WP_IP}:{ports['admin']}/quitquitquit")).status_code == 200
            assert await asyncio.wait_for(proc.wait(), 15) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await backend.close(0.5)
            await server.stop(0)

    asyncio.run(scenario())
    access = (state / "waypoint.log").read_text()
    denied_line = next(line for line in access.splitlines() if '"status":403' in line)
    assert '"local_reply":"RBAC: access denied"' in denied_line
    assert "rbac_access_denied_matched_policy[none]" in denied_line
