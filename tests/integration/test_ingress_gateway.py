"""`waypoint --mode ingress` end to end on loopback (docs/ingress.md, "Data path (contract)"): one
real gateway process for the module, its own certificate from a real mesh-ca for the
service-account token istiod's TokenRequest API gives its pod, hand-built Envoy resources
(Listener `gateway/default/gw`, RouteConfigurations, Clusters, ClusterLoadAssignments, SDS Secrets)
from an ADS server in the test that can push changes, and an HBONE backend that reports the peer
identity it saw. Server and client certificates for the HTTPS listeners come from a test CA made
here with `cryptography`.

Ports: TLS (web.example.test, plus a default chain for other names), HTTP (routing by host and
path, an RBAC DENY), JWT (jwt_authn and an ALLOW policy requiring a request principal), mTLS
(mtls.example.test only, client certificate required).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h11
import httpx
import pytest
from cryptography import x509
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from dataplane.waypoint.proxy.byte_stream import HboneBytes, StreamClosed, TcpBytes
from dataplane.waypoint.proxy.messages import HttpRequest, HttpResponse
from dataplane.waypoint.proxy.server import serve_http
from mesh.hbone import HboneServer, server_context
from mesh.identity import Identity
from tests import harness
from tests.integration.waypoint_env import ECHO, _any, _jwt_authn, http2, token
from tests.integration.waypoint_process import (
    Loop,
    certificates,
    create_pods,
    pod_token_file,
    proxy_env,
    running_proxy,
    start_ads_server,
    start_proxy,
    stop_proxy,
)
from tests.minica import Issued, MiniCa

pytestmark = pytest.mark.integration
GW_IP = "127.0.0.9"
GATEWAY = Identity("cluster.local", "default", "gw-istio")
WEB_IP, OTHER_IP = "127.0.0.2", "127.0.0.3"  # backends: WEB is reached through hbone_address
WEB_VIP = "10.96.1.1"  # the endpoint's `address` (the authority); never dialled
WEB = "inbound-vip|80||web.default.svc.cluster.local"
OTHER = "inbound-vip|80||other.default.svc.cluster.local"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLIENT_ID = "spiffe://example.test/client"


# --- a test CA ---------------------------------------------------------------------------------------


SERVER_CA = MiniCa("server-ca")
CLIENT_CA = MiniCa("client-ca")
WEB_CERT = SERVER_CA.issue(("web.example.test", "mtls.example.test"))
DEFAULT_CERT = SERVER_CA.issue(("default.example.test",))
CLIENT_CERT = CLIENT_CA.issue(uri=CLIENT_ID)


# --- Envoy resources -----------------------------------------------------------------------------------


def cert_secret(name: str, issued: Issued) -> secret_pb2.Secret:
    secret = secret_pb2.Secret(name=name)
    secret.tls_certificate.certificate_chain.inline_bytes = issued.chain_pem
    secret.tls_certificate.private_key.inline_bytes = issued.key_pem
    return secret


def _chain(
    name: str,
    port: int,
    *,
    server_names: tuple[str, ...] = (),
    certs: tuple[str, ...] = (),
    client_ca: str | None = None,
    filters: tuple = (),
) -> listener_components_pb2.FilterChain:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name, rds=hcm_pb2.Rds(route_config_name=f"gateway|default|gw|{port}")
    )
    for filter_name, config in [*filters, ("envoy.filters.http.router", router_pb2.Router())]:
        hcm.http_filters.add(name=filter_name, typed_config=_any(config))
    chain = listener_components_pb2.FilterChain(name=name)
    chain.filter_chain_match.destination_port.value = port
    chain.filter_chain_match.server_names.extend(server_names)
    chain.filters.add(name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm))
    if certs:
        tls = tls_pb2.DownstreamTlsContext()
        for cert in certs:
            tls.common_tls_context.tls_certificate_sds_secret_configs.add(name=cert).sds_config.ads.SetInParent()
        tls.common_tls_context.alpn_protocols.extend(["h2", "http/1.1"])
        if client_ca:
            tls.require_client_certificate.value = True
            tls.common_tls_context.validation_context_sds_secret_config.name = client_ca
        chain.transport_socket.name = "envoy.transport_sockets.tls"
        chain.transport_socket.typed_config.Pack(tls)
    return chain


def _deny_admin() -> http_rbac_pb2.RBAC:
    deny = http_rbac_pb2.RBAC(rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY))
    policy = deny.rules.policies["default.deny-admin"]
    policy.permissions.add().url_path.path.prefix = "/admin"
    policy.principals.add().any = True
    return deny


def _require_request_principal() -> http_rbac_pb2.RBAC:
    """ALLOW `from: requestPrincipals: ["*"]`: any verified JWT (a `sub` in its payload)."""
    allow = http_rbac_pb2.RBAC(rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW))
    policy = allow.rules.policies["default.require-jwt"]
    policy.permissions.add().any = True
    matcher = policy.principals.add().metadata
    matcher.filter = "envoy.filters.http.jwt_authn"
    matcher.path.add().key = "payload"
    matcher.path.add().key = "sub"
    matcher.value.present_match = True
    return allow


def _routes(port: int, vhosts: dict[str, list[tuple[str, str]]]) -> route_pb2.RouteConfiguration:
    config = route_pb2.RouteConfiguration(name=f"gateway|default|gw|{port}")
    for domain, routes in vhosts.items():
        vhost = config.virtual_hosts.add(name=domain, domains=[domain])
        for prefix, cluster in routes:
            vhost.routes.add(name=f"{domain}{prefix}", match=rc_pb2.RouteMatch(prefix=prefix)).route.cluster = cluster
    return config


def _cluster(name: str, address: str, hbone_address: str | None) -> tuple:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.eds_cluster_config.eds_config.CopyFrom(
        config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())
    )
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    lb = endpoint_components_pb2.LbEndpoint()
    socket = lb.endpoint.address.socket_address
    socket.address, socket.port_value = address, 80 if hbone_address else 8080
    istio = struct_pb2.Struct()
    istio.update(
        {"tunnel": "hbone", "identity": str(ECHO)} | ({"hbone_address": hbone_address} if hbone_address else {})
    )
    lb.metadata.filter_metadata["istio"].CopyFrom(istio)
    cla.endpoints.add().lb_endpoints.append(lb)
    return cluster, cla


def resources(ports: dict[str, int]) -> dict[str, dict[str, object]]:
    tls, http, jwt, mtls = ports["tls"], ports["http"], ports["jwt"], ports["mtls"]
    listener = listener_pb2.Listener(name="gateway/default/gw")
    listener.filter_chains.extend(
        [
            _chain("web", tls, server_names=("web.example.test",), certs=("kubernetes://default/web-cert",)),
            _chain("fallback", tls, certs=("kubernetes://default/default-cert",)),
            _chain("plain", http, filters=(("envoy.filters.http.rbac", _deny_admin()),)),
            _chain(
                "jwt",
                jwt,
                filters=(
                    ("envoy.filters.http.jwt_authn", _jwt_authn()),
                    ("envoy.filters.http.rbac", _require_request_principal()),
                ),
            ),
            _chain(
                "mtls",
                mtls,
                server_names=("*.example.test",),
                certs=("kubernetes://default/web-cert",),
                client_ca="kubernetes://default/web-cert-cacert",
            ),
        ]
    )
    routes = [
        _routes(tls, {"*": [("/", WEB)]}),
        _routes(http, {"plain.example.test": [("/api", WEB), ("/admin", WEB)], "other.example.test": [("/", OTHER)]}),
        _routes(jwt, {"*": [("/", WEB)]}),
        _routes(mtls, {"*": [("/", WEB)]}),
    ]
    built = {WEB: _cluster(WEB, WEB_VIP, f"{WEB_IP}:{ports['backend']}"), OTHER: _cluster(OTHER, OTHER_IP, None)}
    ca_secret = secret_pb2.Secret(name="kubernetes://default/web-cert-cacert")
    ca_secret.validation_context.trusted_ca.inline_bytes = CLIENT_CA.pem
    secrets = [
        cert_secret("kubernetes://default/web-cert", WEB_CERT),
        cert_secret("kubernetes://default/default-cert", DEFAULT_CERT),
        ca_secret,
    ]
    return {
        LISTENER_TYPE: {listener.name: listener},
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": {r.name: r for r in routes},
        "type.googleapis.com/envoy.config.cluster.v3.Cluster": {n: c for n, (c, _) in built.items()},
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": {n: a for n, (_, a) in built.items()},
        SECRET_TYPE: {s.name: s for s in secrets},
    }


class PushingAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Answers by-name delta subscriptions, and pushes a changed resource to the streams
    subscribed to it (`push`); records node ids and NACK messages."""

    def __init__(self, held: dict[str, dict[str, object]]) -> None:
        self.resources = held
        self.nodes: list[str] = []
        self.metadata: list[dict] = []
        self.nacks: list[str] = []
        self._streams: list[tuple[asyncio.Queue, dict[str, set[str]]]] = []
        self._nonce = 0
        self._version = 1

    def _response(self, type_url: str, names: list[str]) -> discovery_pb2.DeltaDiscoveryResponse | None:
        held = self.resources.get(type_url, {})
        found = [
            discovery_pb2.Resource(name=n, version=str(self._version), resource=_any(held[n]))
            for n in names
            if n in held
        ]
        if not found:
            return None
        self._nonce += 1
        return discovery_pb2.DeltaDiscoveryResponse(type_url=type_url, resources=found, nonce=str(self._nonce))

    async def DeltaAggregatedResources(self, request_iterator, context):
        out: asyncio.Queue = asyncio.Queue()
        subscribed: dict[str, set[str]] = defaultdict(set)
        entry = (out, subscribed)

        async def read() -> None:
            async for request in request_iterator:
                if request.node.id:
                    self.nodes.append(request.node.id)
                    self.metadata.append(dict(request.node.metadata))
                if request.error_detail.message:
                    self.nacks.append(request.error_detail.message)
                subscribed[request.type_url] |= set(request.resource_names_subscribe)
                response = self._response(request.type_url, list(request.resource_names_subscribe))
                if response is not None:
                    out.put_nowait(response)

        reader = asyncio.ensure_future(read())
        self._streams.append(entry)
        try:
            while True:
                yield await out.get()
        finally:
            reader.cancel()
            self._streams.remove(entry)

    def push(self, type_url: str, resource) -> None:
        self._version += 1
        self.resources.setdefault(type_url, {})[resource.name] = resource
        for out, subscribed in self._streams:
            if resource.name in subscribed[type_url]:
                out.put_nowait(self._response(type_url, [resource.name]))


# --- the backend ---------------------------------------------------------------------------------------


class Backend:
    """An HBONE server with echo's certificate on WEB_IP and OTHER_IP: answers JSON naming
    itself, the HBONE peer's identity, the CONNECT authority and the request."""

    def __init__(self, context: ssl.SSLContext, port: int) -> None:
        self.server = HboneServer(context, self._handle)
        self.port = port

    async def start(self) -> None:
        for ip in (WEB_IP, OTHER_IP):
            await self.server.listen(ip, self.port)

    async def _handle(self, stream) -> None:
        stream.accept()
        facts = {"backend": stream.local_address[0], "peer": stream.peer_identity, "connect": stream.authority}

        async def respond(request: HttpRequest) -> HttpResponse:
            body = {
                **facts,
                "path": request.target,
                "host": request.authority,
                "xfp": request.header("x-forwarded-proto"),
            }
            return HttpResponse(200, [("content-type", "application/json")], json.dumps(body).encode())

        await serve_http(HboneBytes(stream), "auto", respond)


# --- clients ---------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes
    serial: int | None = None  # the server certificate's
    alpn: str | None = None

    @property
    def json(self) -> dict:
        return json.loads(self.body)


async def _h1(stream: TcpBytes, host: str, path: str, headers: tuple) -> tuple[int, bytes]:
    conn = h11.Connection(h11.CLIENT)
    await stream.write(conn.send(h11.Request(method="GET", target=path, headers=[("host", host), *headers])))
    await stream.write(conn.send(h11.EndOfMessage()))
    status, body = 0, b""
    for _ in range(10_000):
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.read())
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, body
    raise AssertionError("no HTTP/1.1 response")


def client_context(alpn: tuple[str, ...], client: Issued | None, tmp: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the tests look at which certificate came (serial) instead
    ctx.load_verify_locations(cadata=SERVER_CA.pem.decode())
    ctx.set_alpn_protocols(list(alpn))
    if client is not None:
        (tmp / "client.pem").write_bytes(client.chain_pem + client.key_pem)
        ctx.load_cert_chain(tmp / "client.pem")
    return ctx


async def request(
    port: int,
    host: str,
    path: str = "/",
    *,
    sni: str | None = None,
    ctx: ssl.SSLContext | None = None,
    headers: tuple = (),
) -> Reply:
    """One GET on a new connection (TLS when `ctx` is given, with `sni`)."""
    reader, writer = await asyncio.open_connection(GW_IP, port, ssl=ctx, server_hostname=sni if ctx else None)
    stream = TcpBytes(reader, writer)
    try:
        serial = alpn = None
        if ctx is not None:
            tls = writer.get_extra_info("ssl_object")
            serial = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
            alpn = tls.selected_alpn_protocol()
        if alpn == "h2":
            got, body, _ = await http2(stream, "GET", path, host.rsplit(":", 1)[0], headers)
            return Reply(int(got[":status"]), body, serial, alpn)
        status, body = await _h1(stream, host, path, headers)
        return Reply(status, body, serial, alpn)
    finally:
        stream.close()


# --- the world -------------------------------------------------------------------------------------------


@dataclass
class World:
    loop: Loop
    ads: PushingAds
    ports: dict[str, int]
    log: Path
    tmp: Path

    def run(self, coro, timeout: float = 30):
        return self.loop.run(coro, timeout)

    def tls(self, alpn: tuple[str, ...] = ("http/1.1",), client: Issued | None = None) -> ssl.SSLContext:
        return client_context(alpn, client, self.tmp)

    def access_line(self, path: str) -> dict:
        """The access-log line of the request for `path` (written once its body has gone out,
        which may be just after the client has it)."""
        for _ in range(100):
            for line in self.log.read_text().splitlines():
                if '"msg":"request"' in line and f'"path":"{path}"' in line:
                    return json.loads(line)
            time.sleep(0.02)
        raise AssertionError(f"no access-log line for {path}")

    def scrape(self) -> list:
        text = httpx.get(f"http://{GW_IP}:{self.ports['metrics']}/stats/prometheus").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return [s for s in families["istio_requests"].samples if s.name == "istio_requests_total"]


async def _start(parts: dict, istiod: harness.Istiod, ca: harness.MeshCa, node_token: str, tmp: Path) -> None:
    """Everything on the loop (waypoint_process.py's steps): the gateway's pod and token, the
    backend, the ADS server, the gateway."""
    names = ("admin", "metrics", "ready", "backend", "ads", "tls", "http", "jwt", "mtls")
    ports = {n: harness.free_port() for n in names}
    parts["ports"] = ports
    uids = create_pods(istiod, (("gw-0", "gw-istio"), ("echo-0", "echo")))
    token_file = await pod_token_file(istiod, node_token, "gw-0", "gw-istio", uids["gw-0"], tmp / "gw-token")
    async with certificates(ca, node_token) as certs:
        echo = await certs.get(ECHO)
    backend = Backend(server_context("".join(echo.chain), echo.key_pem, ca.roots_pem), ports["backend"])
    await backend.start()
    parts["backend"] = backend
    ads = parts["ads"] = PushingAds(resources(ports))
    parts["ads_server"] = await start_ads_server(ads, ca, ports["ads"])
    flags = {
        "--gateway": "default/gw",
        "--mode": "ingress",
        "--listen-address": GW_IP,
        "--admin-port": ports["admin"],
        "--metrics-port": ports["metrics"],
        "--readiness-port": ports["ready"],
        "--hbone-upstream-port": ports["backend"],
        "--drain-seconds": 1,
    }
    env = proxy_env("gw-0", "gw-istio", GW_IP, token_file, ca, ports["ads"])
    await start_proxy(parts, flags, env, tmp / "gateway.log", "gateway")


async def _stop(parts: dict) -> int | None:
    """Ask the gateway to quit (it must drain and exit 0), then stop the test's servers."""
    try:
        return await stop_proxy(parts, timeout=10)
    finally:
        if "backend" in parts:
            await parts["backend"].server.close(0.5)
        if "ads_server" in parts:
            await parts["ads_server"].stop(0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("ingress")
    with running_proxy(tmp, _start, _stop) as (loop, parts):
        yield World(loop, parts["ads"], parts["ports"], parts["log"], tmp)


# --- the tests ---------------------------------------------------------------------------------------------


def test_https_by_sni_to_the_backend_over_hbone(world: World) -> None:
    assert world.ads.nodes[0] == f"router~{GW_IP}~gw-0.default~default.svc.cluster.local"
    assert world.ads.metadata[0]["MODE"] == "ingress"
    port = world.ports["tls"]

    async def scenario() -> None:
        reply = await request(port, "web.example.test", "/hello", sni="web.example.test", ctx=world.tls())
        assert (reply.status, reply.serial, reply.alpn) == (200, WEB_CERT.serial, "http/1.1")
        seen = reply.json
        assert seen["peer"] == str(GATEWAY)  # the gateway's own identity on the HBONE hop
        assert (seen["backend"], seen["connect"]) == (WEB_IP, f"{WEB_VIP}:80")  # hbone_address dialled
        assert (seen["path"], seen["xfp"]) == ("/hello", "https")
        # ALPN h2 picks HTTP/2.
        reply = await request(port, "web.example.test", "/h2", sni="web.example.test", ctx=world.tls(("h2",)))
        assert (reply.status, reply.alpn, reply.json["path"]) == (200, "h2", "/h2")
        # Another name, or none: the chain without server_names, with its certificate.
        for sni in ("elsewhere.test", None):
            reply = await request(port, "web.example.test", "/", sni=sni, ctx=world.tls())
            assert (reply.status, reply.serial) == (200, DEFAULT_CERT.serial)

    world.run(scenario())
    assert world.access_line("/hello")["sni"] == "web.example.test"


def test_plain_http_routes_by_host_and_path_and_rbac_deny(world: World) -> None:
    port = world.ports["http"]

    async def scenario() -> None:
        api = await request(port, "plain.example.test", "/api/items")
        assert (api.status, api.json["backend"], api.json["path"]) == (200, WEB_IP, "/api/items")
        other = await request(port, "other.example.test", "/anything")
        assert (other.status, other.json["backend"]) == (200, OTHER_IP)
        assert other.json["connect"] == f"{OTHER_IP}:8080"  # no hbone_address: address:15008 (the test's port)
        assert (await request(port, "plain.example.test", "/nothing")).status == 404
        assert (await request(port, "unknown.example.test", "/api")).status == 404
        denied = await request(port, "plain.example.test", "/admin/x")
        assert (denied.status, denied.body) == (403, b"RBAC: access denied")

    world.run(scenario())


def test_jwt_required_at_the_gateway(world: World) -> None:
    port = world.ports["jwt"]

    async def scenario() -> None:
        assert (await request(port, "jwt.example.test")).status == 403  # no token: no request principal
        good = await request(port, "jwt.example.test", headers=(("authorization", f"Bearer {token(['dev'])}"),))
        assert good.status == 200
        bad = await request(port, "jwt.example.test", headers=(("authorization", "Bearer not.a.jwt"),))
        assert bad.status == 401

    world.run(scenario())


def test_mutual_tls_listener(world: World) -> None:
    port = world.ports["mtls"]

    async def scenario() -> None:
        with pytest.raises((ssl.SSLError, ConnectionError, StreamClosed)):
            await request(port, "mtls.example.test", sni="mtls.example.test", ctx=world.tls())
        with pytest.raises((ssl.SSLError, ConnectionError, StreamClosed)):  # no chain for this name, no default
            await request(port, "x", sni="nope.other.test", ctx=world.tls(client=CLIENT_CERT))
        other_client = SERVER_CA.issue(uri="spiffe://example.test/stranger")  # not from the client CA
        with pytest.raises((ssl.SSLError, ConnectionError, StreamClosed)):
            await request(port, "mtls.example.test", sni="mtls.example.test", ctx=world.tls(client=other_client))
        reply = await request(
            port, "mtls.example.test", "/m", sni="mtls.example.test", ctx=world.tls(client=CLIENT_CERT)
        )
        assert (reply.status, reply.serial) == (200, WEB_CERT.serial)

    world.run(scenario())
    assert world.access_line("/m")["source_principal"] == CLIENT_ID


def test_metrics_report_the_gateway_as_source(world: World) -> None:
    samples = [s for s in world.scrape() if s.labels["response_code"] == "200"]
    assert samples
    for sample in samples:
        labels = sample.labels
        assert labels["reporter"] == "source"
        assert (labels["source_workload"], labels["source_workload_namespace"]) == ("gw-0", "default")
        assert labels["source_principal"] == str(GATEWAY)
        assert labels["connection_security_policy"] == "mutual_tls"
    web = [s for s in samples if s.labels["destination_service"] == "web.default.svc.cluster.local"]
    assert web and web[0].labels["destination_principal"] == str(ECHO)


def test_secret_rotation_and_a_malformed_secret(world: World) -> None:
    port = world.ports["tls"]
    rotated = SERVER_CA.issue(("web.example.test", "mtls.example.test"))
    mismatched = cert_secret("kubernetes://default/web-cert", Issued(rotated.chain_pem, WEB_CERT.key_pem, 0))

    async def serial() -> int | None:
        return (await request(port, "web.example.test", sni="web.example.test", ctx=world.tls())).serial

    async def scenario() -> None:
        world.ads.push(SECRET_TYPE, mismatched)
        for _ in range(100):
            if world.ads.nacks:
                break
            await asyncio.sleep(0.02)
        assert await serial() == WEB_CERT.serial  # the last good Secret stays in force
        world.ads.push(SECRET_TYPE, cert_secret("kubernetes://default/web-cert", rotated))
        for _ in range(100):
            if await serial() == rotated.serial:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the rotated certificate was never served")

    world.run(scenario())
    assert len(world.ads.nacks) == 1 and "KEY_VALUES_MISMATCH" in world.ads.nacks[0], world.ads.nacks
    key_body = b"".join(WEB_CERT.key_pem.splitlines()[1:-1]).decode()
    for text in (world.ads.nacks[0], world.log.read_text()):
        assert "PRIVATE KEY" not in text and key_body[:40] not in text
