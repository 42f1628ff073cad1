"""What test_waypoint.py runs the real `waypoint` process against: the Envoy resources an ADS
server in the test serves (in the contract's shape), HBONE backends with distinct behaviours on
127.0.0.x (one address per behaviour, all on one port, as `--hbone-upstream-port` needs), a
grpcio server behind one of them, and small HTTP/1.1, HTTP/2 and gRPC clients over HBONE.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import grpc
import h11
import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, empty_pb2, struct_pb2
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, TrailersReceived

from dataplane.waypoint.proxy.byte_stream import HboneBytes
from dataplane.waypoint.proxy.downstream_h1 import serve_h1
from dataplane.waypoint.proxy.downstream_h2 import PREFACE, H2Server
from dataplane.waypoint.proxy.messages import HttpRequest, HttpResponse
from dataplane.waypoint.proxy.server import sniff
from mesh.hbone import HboneServer, open_tcp, splice
from mesh.identity import Identity

PORT = 80
SLEEP = Identity("cluster.local", "default", "sleep")
ECHO = Identity("cluster.local", "default", "echo")
WAYPOINT = Identity("cluster.local", "default", "waypoint")

# The first chain: RBAC GET-only for sleep, a 90/10 split.
VIP, HOST = "10.96.0.10", "echo.default.svc.cluster.local"
V1, V2 = f"inbound-vip|{PORT}|v1|{HOST}", f"inbound-vip|{PORT}|v2|{HOST}"
# The second: the resilience features, one route (and cluster) each.
L7_VIP, L7_HOST = "10.96.0.20", "l7.default.svc.cluster.local"
# The third: RequestAuthentication + an ALLOW policy on a claim.
JWT_VIP, JWT_HOST = "10.96.0.30", "secure.default.svc.cluster.local"
ISSUER = "https://issuer.mesh.test"
JWT_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())

# Backends by address: what each answers.
OK, V2_IP, FLAKY, SLOW, BAD, GRPC_IP = "127.0.0.2", "127.0.0.3", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"
BACKEND_IPS = (OK, V2_IP, FLAKY, SLOW, BAD, GRPC_IP)
TIMEOUT = 0.3  # the /timeout route's
DELAY = 0.2  # the /delay route's fault


def _any(msg) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def cluster_name(subset: str) -> str:
    return f"inbound-vip|{PORT}|{subset}|{L7_HOST}"


def token(groups: list[str], key=JWT_KEY) -> str:
    """An ES256 token of ISSUER with a `groups` claim, signed with `key`."""
    claims = {"iss": ISSUER, "sub": "alice", "groups": groups, "exp": int(time.time()) + 600}
    return pyjwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})


# --- Envoy resources ---------------------------------------------------------------------------------


def _chain(vip: str, host: str, filters: list[tuple[str, object]]) -> listener_components_pb2.FilterChain:
    routes = f"inbound-vip|{PORT}|http|{host}"
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=f"{host}:{PORT}", rds=hcm_pb2.Rds(route_config_name=routes))
    for name, config in [*filters, ("envoy.filters.http.router", router_pb2.Router())]:
        hcm.http_filters.add(name=name, typed_config=_any(config))
    chain = listener_components_pb2.FilterChain(name=f"{host}:{PORT}")
    chain.filter_chain_match.prefix_ranges.add(address_prefix=vip).prefix_len.value = 32
    chain.filter_chain_match.destination_port.value = PORT
    chain.filters.add(name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm))
    return chain


def _get_only_for_sleep() -> http_rbac_pb2.RBAC:
    allow = http_rbac_pb2.RBAC(rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW))
    policy = allow.rules.policies["default.allow-get"]
    method = policy.permissions.add().header
    method.name, method.string_match.exact = ":method", "GET"
    policy.principals.add().authenticated.principal_name.CopyFrom(string_pb2.StringMatcher(exact=str(SLEEP)))
    return allow


def _jwt_authn() -> jwt_pb2.JwtAuthentication:
    """What mesh-xds makes of a RequestAuthentication with an inline JWKS."""
    jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(JWT_KEY.public_key()))
    jwk |= {"kid": "k1", "alg": "ES256", "use": "sig"}
    provider = jwt_pb2.JwtProvider(issuer=ISSUER, forward=True, payload_in_metadata="payload")
    provider.local_jwks.inline_string = json.dumps({"keys": [jwk]})
    config = jwt_pb2.JwtAuthentication(providers={"default.ra.0": provider})
    rule = config.rules.add(match=rc_pb2.RouteMatch(prefix="/"))
    options = rule.requires.requires_any.requirements
    options.add(provider_name="default.ra.0")
    options.add(allow_missing=empty_pb2.Empty())
    return config


def _admins_only() -> http_rbac_pb2.RBAC:
    """An ALLOW policy `when request.auth.claims[groups] = admin`, as mesh-xds writes it."""
    allow = http_rbac_pb2.RBAC(rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW))
    policy = allow.rules.policies["default.admins"]
    policy.permissions.add().any = True
    either = policy.principals.add().or_ids.ids
    for kind in ("string", "list"):
        matcher = either.add().metadata
        matcher.filter = "envoy.filters.http.jwt_authn"
        matcher.path.add().key = "payload"
        matcher.path.add().key = "groups"
        if kind == "string":
            matcher.value.string_match.exact = "admin"
        else:
            matcher.value.list_match.one_of.string_match.exact = "admin"
    return allow


def _route(vhost: rc_pb2.VirtualHost, prefix: str, cluster: str) -> rc_pb2.Route:
    route = vhost.routes.add(name=prefix.strip("/") or "default", match=rc_pb2.RouteMatch(prefix=prefix))
    route.route.cluster = cluster
    return route


def _fault(**fields) -> any_pb2.Any:
    fault = fault_pb2.HTTPFault(**fields)
    return _any(fault)


def _l7_routes() -> route_pb2.RouteConfiguration:
    vhost = rc_pb2.VirtualHost(name=L7_HOST, domains=["*"])
    retry = _route(vhost, "/retry", cluster_name("flaky")).route.retry_policy
    retry.retry_on, retry.num_retries.value = "5xx", 3
    _route(vhost, "/timeout", cluster_name("slow")).route.timeout.FromMilliseconds(int(TIMEOUT * 1000))
    hundred = percent_pb2.FractionalPercent(numerator=100)
    abort = _route(vhost, "/abort", cluster_name("ok"))
    abort.typed_per_filter_config["envoy.filters.http.fault"].CopyFrom(
        _fault(abort=fault_pb2.FaultAbort(http_status=418, percentage=hundred))
    )
    delay = _route(vhost, "/delay", cluster_name("ok"))
    fixed = fault_pb2.HTTPFault().delay
    fixed.fixed_delay.FromMilliseconds(int(DELAY * 1000))
    fixed.percentage.CopyFrom(hundred)
    delay.typed_per_filter_config["envoy.filters.http.fault"].CopyFrom(_fault(delay=fixed))
    _route(vhost, "/breaker", cluster_name("limited"))
    _route(vhost, "/outlier", cluster_name("outlier"))
    _route(vhost, "/empty", cluster_name("empty"))
    _route(vhost, "/echo.Echo/", cluster_name("grpc"))
    _route(vhost, "/", cluster_name("ok"))
    return route_pb2.RouteConfiguration(name=f"inbound-vip|{PORT}|http|{L7_HOST}", virtual_hosts=[vhost])


def _endpoint(ip: str, workload: str | None = None) -> endpoint_components_pb2.LbEndpoint:
    lb = endpoint_components_pb2.LbEndpoint()
    lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value = ip, 8080
    fields = {"tunnel": "hbone", "identity": str(ECHO)}
    if workload:
        fields |= {"workload": workload, "namespace": "default"}
    istio = struct_pb2.Struct()
    istio.update(fields)
    lb.metadata.filter_metadata["istio"].CopyFrom(istio)
    return lb


def _cluster(name: str, ips: tuple[str, ...]) -> tuple[cluster_pb2.Cluster, endpoint_pb2.ClusterLoadAssignment]:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.eds_cluster_config.eds_config.CopyFrom(
        config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())
    )
    cluster.common_lb_config.healthy_panic_threshold.SetInParent()  # 0 %, as mesh-xds sets it
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    locality = cla.endpoints.add()
    for ip in ips:
        locality.lb_endpoints.append(_endpoint(ip, "echo-0" if ip == OK else None))
    return cluster, cla


def resources() -> dict[str, dict[str, object]]:
    """Every resource the ADS server holds, by type and name."""
    echo_vhost = rc_pb2.VirtualHost(name=HOST, domains=["*"])
    split = echo_vhost.routes.add(name="split", match=rc_pb2.RouteMatch(prefix="/split"))
    for name, weight in ((V1, 90), (V2, 10)):
        split.route.weighted_clusters.clusters.add(name=name).weight.value = weight
    _route(echo_vhost, "/", V1)
    jwt_vhost = rc_pb2.VirtualHost(name=JWT_HOST, domains=["*"])
    _route(jwt_vhost, "/", cluster_name("ok"))
    route_configs = [
        route_pb2.RouteConfiguration(name=f"inbound-vip|{PORT}|http|{HOST}", virtual_hosts=[echo_vhost]),
        _l7_routes(),
        route_pb2.RouteConfiguration(name=f"inbound-vip|{PORT}|http|{JWT_HOST}", virtual_hosts=[jwt_vhost]),
    ]
    listener = listener_pb2.Listener(name="waypoint/default/wp")
    listener.filter_chains.append(_chain(VIP, HOST, [("envoy.filters.http.rbac", _get_only_for_sleep())]))
    listener.filter_chains.append(_chain(L7_VIP, L7_HOST, [("envoy.filters.http.fault", fault_pb2.HTTPFault())]))
    listener.filter_chains.append(
        _chain(
            JWT_VIP,
            JWT_HOST,
            [("envoy.filters.http.jwt_authn", _jwt_authn()), ("envoy.filters.http.rbac", _admins_only())],
        )
    )
    built = {
        V1: _cluster(V1, (OK,)),
        V2: _cluster(V2, (V2_IP,)),
        cluster_name("ok"): _cluster(cluster_name("ok"), (OK,)),
        cluster_name("flaky"): _cluster(cluster_name("flaky"), (FLAKY,)),
        cluster_name("slow"): _cluster(cluster_name("slow"), (SLOW,)),
        cluster_name("limited"): _cluster(cluster_name("limited"), (SLOW,)),
        cluster_name("outlier"): _cluster(cluster_name("outlier"), (OK, BAD)),
        cluster_name("empty"): _cluster(cluster_name("empty"), ()),
        cluster_name("grpc"): _cluster(cluster_name("grpc"), (GRPC_IP,)),
    }
    limits = built[cluster_name("limited")][0].circuit_breakers.thresholds.add()
    limits.max_connections.value, limits.max_pending_requests.value = 1, 1
    built[cluster_name("outlier")][0].outlier_detection.consecutive_5xx.value = 3
    return {
        "type.googleapis.com/envoy.config.listener.v3.Listener": {listener.name: listener},
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": {rc.name: rc for rc in route_configs},
        "type.googleapis.com/envoy.config.cluster.v3.Cluster": {n: c for n, (c, _) in built.items()},
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": {n: a for n, (_, a) in built.items()},
    }


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Answers by-name delta subscriptions from a fixed set of resources; records what it saw."""

    def __init__(self) -> None:
        self.resources = resources()
        self.nodes: list[str] = []
        self.nacks: list[str] = []

    async def DeltaAggregatedResources(self, request_iterator, context):
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


# --- backends ------------------------------------------------------------------------------------------


class Backends:
    """HBONE servers with echo's certificate on every BACKEND_IPS address; what they do depends on
    the address (see the constants). `seen` counts requests per address."""

    def __init__(self, context, port: int, grpc_port: int) -> None:
        self.server = HboneServer(context, self._handle)
        self.port = port
        self.grpc_port = grpc_port
        self.seen: Counter[str] = Counter()

    async def start(self) -> None:
        for ip in BACKEND_IPS:
            await self.server.listen(ip, self.port)

    async def _answer(self, ip: str, request: HttpRequest) -> HttpResponse:
        self.seen[ip] += 1
        if ip == FLAKY and self.seen[ip] % 2:
            return HttpResponse(503, [("content-type", "text/plain")], b"flaky")
        if ip == BAD:
            return HttpResponse(503, [("content-type", "text/plain")], b"bad")
        if ip == SLOW:
            await asyncio.sleep(2.0 if request.target.startswith("/timeout") else 0.4)
        name = {OK: "v1", V2_IP: "v2"}.get(ip, ip)
        return HttpResponse(200, [("content-type", "text/plain")], name.encode())

    async def _handle(self, stream) -> None:
        stream.accept()
        ip = stream.local_address[0]
        if ip == GRPC_IP:  # the grpcio server speaks for this address
            await splice(stream, await open_tcp("127.0.0.1", self.grpc_port))
            return
        tunnel = HboneBytes(stream)

        async def respond(request: HttpRequest) -> HttpResponse:
            return await self._answer(ip, request)

        first = await sniff(tunnel)
        if first.startswith(PREFACE):  # the waypoint speaks HTTP/2 for HTTP/2 downstreams
            await H2Server(tunnel, respond).run(first)
        elif first:
            await serve_h1(tunnel, first, respond)


async def start_grpc_server(port: int) -> grpc.aio.Server:
    """`echo.Echo/Say` over raw bytes: `hello <request>`, or NOT_FOUND for `fail`."""

    async def say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"fail":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such greeting")
        return b"hello " + request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler("echo.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


# --- clients over HBONE ----------------------------------------------------------------------------


async def http1(
    stream: HboneBytes, conn: h11.Connection, method: str, path: str, host: str, headers: tuple = ()
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 exchange on a kept-alive tunnel: status, headers, body."""
    head = [("host", f"{host}:{PORT}"), *headers]
    await stream.write(conn.send(h11.Request(method=method, target=path, headers=head)))
    await stream.write(conn.send(h11.EndOfMessage()))
    status, got, body = 0, {}, b""
    for _ in range(10_000):
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.read())
        elif isinstance(event, h11.Response):
            status = event.status_code
            got = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            conn.start_next_cycle()
            return status, got, body
    raise AssertionError("no HTTP/1.1 response")


async def http2(
    stream: HboneBytes, method: str, path: str, host: str, headers: tuple = (), body: bytes = b""
) -> tuple[dict[str, str], bytes, dict[str, str]]:
    """One HTTP/2 request on a new connection over the tunnel: headers, body, trailers."""
    conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    pseudo = [(":method", method), (":path", path), (":scheme", "http"), (":authority", f"{host}:{PORT}")]
    conn.send_headers(sid, pseudo + list(headers), end_stream=not body)
    if body:
        conn.send_data(sid, body, end_stream=True)
    await stream.write(conn.data_to_send())
    got, data, trailers = {}, b"", {}
    for _ in range(1000):
        for event in conn.receive_data(await stream.read()):
            if isinstance(event, ResponseReceived):
                got = dict(event.headers)
                if event.stream_ended is not None:  # a headers-only answer: they are the trailers too
                    trailers = {k: v for k, v in got.items() if not k.startswith(":")}
            elif isinstance(event, DataReceived):
                data += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, TrailersReceived):
                trailers = dict(event.headers)
            elif isinstance(event, StreamEnded):
                return got, data, trailers
        await stream.write(conn.data_to_send())
    raise AssertionError("no HTTP/2 response")


async def grpc_call(
    stream: HboneBytes, method: str, message: bytes, host: str = L7_HOST, headers: tuple = ()
) -> tuple[dict[str, str], bytes, dict[str, str]]:
    """A unary gRPC call as HTTP/2 frames: headers, the reply message, and the trailers (those of
    a trailers-only answer: its headers, when they ended the stream; a grpc-status in headers that
    did not end the stream is not a status, as gRPC clients read it)."""
    frame = b"\x00" + len(message).to_bytes(4, "big") + message
    grpc_headers = (("content-type", "application/grpc"), ("te", "trailers"), *headers)
    got, data, trailers = await http2(stream, "POST", method, host, grpc_headers, frame)
    return got, data[5:], trailers
