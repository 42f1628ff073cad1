"""One request through the filter chain, in the listener's order: RBAC (403), route (404 or a
direct response), circuit breaker (503 UO), endpoint (503 UH), upstream with timeout (504 UT) and
retries, mirroring, header modifiers; then telemetry. Envoy's local-reply bodies and response
flags are kept, so users' expectations from Istio hold.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import secrets
import time
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2

from ..config import ConfigStore, Endpoint, FilterChain
from ..l7.model import Request
from ..l7.rbac import RbacEngine
from ..telemetry import Metrics, RequestRecord, Source, log_request
from .decisions import RouteChoice, apply_header_modifiers, select_route
from .messages import HttpRequest, HttpResponse, text_response
from .upstream import ConnectFailure, UpstreamReset, Upstreams, discard

log = logging.getLogger("waypoint.proxy")
DEFAULT_TIMEOUT = 15.0  # Envoy's route timeout when none is set
RETRIABLE_5XX = frozenset((500, 501, 502, 503, 504))


@dataclass(frozen=True)
class Downstream:
    """What one CONNECT tells about its requests' origin."""

    chain: FilterChain
    vip: str
    port: int
    source: Source
    source_ip: str


class ClusterRuntime:
    """Per cluster: round-robin cursor and in-flight count (the circuit breaker's input)."""

    def __init__(self) -> None:
        self.cursor = itertools.count()
        self.in_flight = 0


class Pipeline:
    """The request handler of every filter chain (stateless apart from per-cluster counters)."""

    def __init__(self, store: ConfigStore, upstreams: Upstreams, metrics: Metrics, cluster_id: str) -> None:
        self._store = store
        self._upstreams = upstreams
        self._metrics = metrics
        self._cluster_id = cluster_id
        self._rng = random.Random()
        self._clusters: dict[str, ClusterRuntime] = {}
        self._rbac: dict[int, RbacEngine] = {}
        self._mirrors: set[asyncio.Task[None]] = set()

    def in_flight(self, cluster_name: str) -> int:
        """Requests in flight to a cluster (config_dump)."""
        runtime = self._clusters.get(cluster_name)
        return runtime.in_flight if runtime else 0

    def _engine(self, chain: FilterChain) -> RbacEngine:
        engine = self._rbac.get(id(chain))
        if engine is None:
            engine = self._rbac[id(chain)] = RbacEngine(chain.rbac)
        return engine

    def _l7_request(self, down: Downstream, request: HttpRequest) -> Request:
        return Request(
            method=request.method,
            path=request.target,
            authority=request.authority,
            headers=request.headers,
            destination_port=down.port,
            source_ip=down.source_ip,
            source_principal=down.source.principal,
            protocol=request.protocol,
            scheme=request.scheme,
            destination_ip=down.vip,
        )

    async def handle(self, down: Downstream, request: HttpRequest) -> HttpResponse:
        """Answer one request (never raises for a request's own failure)."""
        started = time.monotonic()
        _add_request_headers(request)
        l7 = self._l7_request(down, request)
        choice: RouteChoice | None = None
        endpoint: Endpoint | None = None
        decision = self._engine(down.chain).evaluate(l7)
        if not decision.allowed:
            response = text_response(403, "RBAC: access denied", details=decision.log_reason)
        else:
            response, choice, endpoint = await self._route_and_forward(down, request, l7)
        response.headers.append(("x-request-id", request.header("x-request-id") or ""))
        self._observe(down, request, response, choice, endpoint, started)
        return response

    async def _route_and_forward(
        self, down: Downstream, request: HttpRequest, l7: Request
    ) -> tuple[HttpResponse, RouteChoice | None, Endpoint | None]:
        route_config = self._store.route_config(down.chain.route_config_name)
        choice = select_route(route_config, l7, self._rng) if route_config is not None else None
        if choice is None:
            return text_response(404, "", flags="NR", details="route_not_found"), None, None
        route = choice.route
        if route.HasField("direct_response"):
            body = route.direct_response.body.inline_string or route.direct_response.body.inline_bytes.decode()
            return text_response(route.direct_response.status, body, flags="-", details="direct_response"), choice, None
        action = route.route
        headers = apply_header_modifiers(
            request.headers, list(route.request_headers_to_add), list(route.request_headers_to_remove)
        )
        for mirror in action.request_mirror_policies:
            self._mirror(mirror.cluster, request, headers)
        response, endpoint = await self._forward(choice.cluster or "", request, headers, action)
        response.headers = apply_header_modifiers(
            response.headers, list(route.response_headers_to_add), list(route.response_headers_to_remove)
        )
        return response, choice, endpoint

    def _pick(self, cluster_name: str) -> Endpoint | None:
        endpoints = self._store.cluster_endpoints(cluster_name)
        if not endpoints:
            return None
        runtime = self._clusters.setdefault(cluster_name, ClusterRuntime())
        return endpoints[next(runtime.cursor) % len(endpoints)]

    def _overflow(self, cluster: cluster_pb2.Cluster | None, runtime: ClusterRuntime) -> bool:
        if cluster is None or not cluster.circuit_breakers.thresholds:
            return False
        limits = cluster.circuit_breakers.thresholds[0]
        if limits.HasField("max_requests") and runtime.in_flight >= limits.max_requests.value:
            return True
        return limits.HasField("max_pending_requests") and runtime.in_flight >= limits.max_pending_requests.value

    async def _forward(
        self, cluster_name: str, request: HttpRequest, headers: list[tuple[str, str]], action
    ) -> tuple[HttpResponse, Endpoint | None]:
        runtime = self._clusters.setdefault(cluster_name, ClusterRuntime())
        if self._overflow(self._store.cluster(cluster_name), runtime):
            return text_response(
                503, "upstream connect error or disconnect/reset before headers. reset reason: overflow", flags="UO"
            ), None
        timeout = action.timeout.ToTimedelta().total_seconds() if action.HasField("timeout") else DEFAULT_TIMEOUT
        retries = action.retry_policy.num_retries.value if action.HasField("retry_policy") else 0
        retry_on = set(action.retry_policy.retry_on.split(",")) if action.HasField("retry_policy") else set()
        deadline = time.monotonic() + timeout if timeout > 0 else None
        runtime.in_flight += 1
        try:
            response, endpoint = await self._attempts(cluster_name, request, headers, retries, retry_on, deadline)
        finally:
            runtime.in_flight -= 1
        return response, endpoint

    async def _attempts(self, cluster_name, request, headers, retries, retry_on, deadline):
        endpoint = None
        response = text_response(503, "no healthy upstream", flags="UH")
        for attempt in range(retries + 1):
            endpoint = self._pick(cluster_name)
            if endpoint is None:
                return text_response(503, "no healthy upstream", flags="UH"), None
            left = None if deadline is None else deadline - time.monotonic()
            try:
                upstream = await asyncio.wait_for(self._upstreams.request(endpoint, request, headers), left)
            except TimeoutError:
                return text_response(504, "upstream request timeout", flags="UT"), endpoint
            except ConnectFailure as e:
                response = text_response(
                    503,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                    flags="UF",
                    details=str(e),
                )
                if attempt < retries and retry_on & {"connect-failure", "5xx", "gateway-error", "reset"}:
                    continue
                return _retried(response, attempt), endpoint
            except UpstreamReset as e:
                response = text_response(
                    503,
                    "upstream connect error or disconnect/reset before headers. reset reason: remote reset",
                    flags="UC",
                    details=str(e),
                )
                if attempt < retries and retry_on & {"5xx", "reset", "gateway-error"}:
                    continue
                return _retried(response, attempt), endpoint
            retriable = (upstream.status in RETRIABLE_5XX and "5xx" in retry_on) or (
                upstream.status in (502, 503, 504) and "gateway-error" in retry_on
            )
            if attempt < retries and retriable:
                await discard(upstream.body)
                continue
            result = HttpResponse(upstream.status, upstream.headers, upstream.body, length=upstream.length)
            result.upstream_host = endpoint.address
            return result, endpoint
        return response, endpoint

    def _mirror(self, cluster_name: str, request: HttpRequest, headers: list[tuple[str, str]]) -> None:
        """Fire and forget a copy (Envoy appends `-shadow` to the authority); its answer is dropped."""
        endpoint = self._pick(cluster_name)
        if endpoint is None:
            return
        host, sep, port = request.authority.rpartition(":")
        shadow_authority = f"{host}-shadow:{port}" if sep else f"{request.authority}-shadow"
        copy = HttpRequest(
            request.method, request.target, shadow_authority, list(headers), request.body, request.protocol
        )

        async def send() -> None:
            try:
                upstream = await asyncio.wait_for(
                    self._upstreams.request(endpoint, copy, copy.headers), DEFAULT_TIMEOUT
                )
                await discard(upstream.body)
            except Exception as e:  # a mirror's failure never touches the real request
                log.debug("mirror to %s failed: %s", cluster_name, e)

        task = asyncio.ensure_future(send())
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    def _observe(self, down, request, response, choice, endpoint, started) -> None:
        """Metrics now; the access-log line and byte counts once the body has gone out."""
        body = response.body
        if isinstance(body, bytes):
            self._record(down, request, response, choice, endpoint, started, len(body))
            return

        async def counted():
            size = 0
            try:
                async for chunk in body:
                    size += len(chunk)
                    yield chunk
            finally:
                self._record(down, request, response, choice, endpoint, started, size)

        response.body = counted()

    def _record(self, down, request, response, choice, endpoint, started, size) -> None:
        duration = (time.monotonic() - started) * 1000
        grpc = request.is_grpc
        grpc_status = next((v for k, v in (response.trailers or response.headers) if k == "grpc-status"), None)
        self._metrics.record(
            RequestRecord(
                source=down.source,
                service_host=down.chain.host,
                destination_principal=endpoint.identity if endpoint else None,
                destination_cluster=self._cluster_id,
                protocol="grpc" if grpc else "http",
                status=response.status,
                grpc_status=grpc_status,
                flags=response.flags,
                duration_ms=duration,
                request_bytes=len(request.body),
                response_bytes=size,
            )
        )
        log_request(
            {
                "method": request.method,
                "path": request.target.split("?", 1)[0],
                "authority": request.authority,
                "protocol": request.protocol,
                "status": response.status,
                "response_flags": response.flags,
                "response_code_details": response.details or ("via_upstream" if endpoint else ""),
                "upstream_host": response.upstream_host or None,
                "duration_ms": round(duration, 3),
                "bytes_received": len(request.body),
                "bytes_sent": size,
                "source_principal": down.source.principal,
                "route_name": choice.name if choice else None,
                "upstream_cluster": choice.cluster if choice else None,
                "filter_chain": down.chain.name,
                "request_id": request.header("x-request-id"),
                "local_reply": response.body.decode(errors="replace")
                if endpoint is None and isinstance(response.body, bytes)
                else None,
            }
        )


def _retried(response: HttpResponse, attempts: int) -> HttpResponse:
    if attempts:
        response.flags = "URX" if response.flags == "-" else f"{response.flags},URX"
    return response


def _add_request_headers(request: HttpRequest) -> None:
    """`x-forwarded-proto`, `x-request-id` when missing, W3C `traceparent` (a new trace when
    absent: version 00, 16-byte trace id, 8-byte parent id, sampled)."""
    names = {k for k, _ in request.headers}
    request.headers = [(k, v) for k, v in request.headers if k != "x-forwarded-proto"]
    request.headers.append(("x-forwarded-proto", request.scheme))
    if "x-request-id" not in names:
        request.headers.append(("x-request-id", _uuid4()))
    if "traceparent" not in names:
        request.headers.append(("traceparent", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"))


def _uuid4() -> str:
    import uuid

    return str(uuid.uuid4())
