"""One request through its filter chain, in the listener's order: JWT authentication (401, or 403
for a refused audience), RBAC (403), route (404 NR, or a direct response), fault injection
(delay DI, abort FI), then the router (forward.py: breakers, endpoint, retries, timeout),
mirrors and the route's header modifiers; then telemetry. Local answers keep Envoy's bodies and
response flags, and a gRPC request gets them as gRPC (local_reply.py), so users' expectations
from Istio hold.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import ConfigStore, FilterChain
from ..l7 import fault
from ..l7.model import Request
from ..l7.rbac import DENIED_BODY, DENIED_STATUS
from ..l7.rbac import RESPONSE_FLAG as RBAC_FLAG
from ..l7.routing import NO_ROUTE_FLAG, NO_ROUTE_STATUS, RouteDecision
from ..l7.upstreams import Endpoint
from ..telemetry import Metrics, Reporting, RequestRecord, Source, access_log_enabled, log_request
from .clusters import UpstreamClusters
from .forward import Forwarder
from .local_reply import local_reply
from .messages import HttpRequest, HttpResponse
from .upstream import Upstreams
from .upstream_response import RequestHead, discard

if TYPE_CHECKING:  # tracing.py imports the OpenTelemetry SDK: only app.py loads it, when tracing is on
    from ..tracing import RequestSpan, Tracer

log = logging.getLogger("waypoint.proxy")
MIRROR_TIMEOUT = 15.0


@dataclass(frozen=True)
class Downstream:
    """What one CONNECT (or ingress connection) tells about its requests' origin."""

    chain: FilterChain
    vip: str
    port: int
    source: Source
    source_ip: str
    sni: str | None = None  # the TLS server name an ingress client sent
    destination: Endpoint | None = None  # a workload chain's pod at the CONNECT's address (original_dst.py)


@dataclass
class _Outcome:
    response: HttpResponse
    decision: RouteDecision | None = None
    endpoint: Endpoint | None = None
    local: bool = True  # answered by the waypoint itself
    span: RequestSpan | None = None  # with --otlp-endpoint


class Pipeline:
    """The request handler of every filter chain. One per process."""

    def __init__(
        self,
        store: ConfigStore,
        clusters: UpstreamClusters,
        upstreams: Upstreams,
        metrics: Metrics,
        cluster_id: str,
        reporting: Reporting | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._store = store
        self._tracer = tracer
        self._reporting = reporting or Reporting()
        self._clusters = clusters
        self._upstreams = upstreams
        self._metrics = metrics
        self._cluster_id = cluster_id
        self._rng = random.Random()
        self._ids = random.Random()  # request and trace ids (seeded from the OS)
        self._forwarder = Forwarder(clusters, upstreams, self._rng)
        self._active_faults = 0
        self._mirrors: set[asyncio.Task[None]] = set()

    def _l7_request(self, down: Downstream, request: HttpRequest) -> Request:
        return Request(
            method=request.method,
            path=request.target,
            authority=request.authority,
            headers=list(request.headers),
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
        span = self._tracer.start(request) if self._tracer is not None else None  # names itself upstream
        _add_request_headers(request, self._ids)
        l7 = self._l7_request(down, request)
        outcome = self._authenticate_and_authorize(down.chain, request, l7)
        if outcome is None:
            outcome = await self._route_and_forward(down, request, l7)
        response = outcome.response
        response.headers.append(("x-request-id", request.header("x-request-id") or ""))
        outcome.span = span
        self._observe(down, request, outcome, started)
        return response

    def _authenticate_and_authorize(self, chain: FilterChain, request: HttpRequest, l7: Request) -> _Outcome | None:
        """The jwt_authn then rbac filters; an outcome when one of them answers."""
        grpc = request.is_grpc
        if chain.authenticator is not None:
            verdict = chain.authenticator.authenticate(l7)  # sets l7.jwt_payload and its metadata
            if not verdict.ok:
                details = "jwt_authn_access_denied{" + verdict.body.replace(" ", "_") + "}"
                return _Outcome(
                    local_reply(grpc, verdict.status, verdict.body, details=details, headers=verdict.headers)
                )
        decision = chain.rbac_engine.evaluate(l7)
        if not decision.allowed:
            return _Outcome(local_reply(grpc, DENIED_STATUS, DENIED_BODY, flags=RBAC_FLAG, details=decision.log_reason))
        return None

    async def _route_and_forward(self, down: Downstream, request: HttpRequest, l7: Request) -> _Outcome:
        grpc = request.is_grpc
        table = self._store.route_table(down.chain.route_config_name)
        decision = table.route(l7, self._rng) if table is not None else None
        if decision is None:
            return _Outcome(local_reply(grpc, NO_ROUTE_STATUS, "", flags=NO_ROUTE_FLAG, details="route_not_found"))
        injected = fault.NO_FAULT
        if down.chain.fault:
            injected = fault.decide(
                decision.fault, l7, self._rng, cluster=decision.cluster, active_faults=self._active_faults
            )
        outcome = await self._after_fault(request, l7, decision, injected, down.destination)
        if injected.response_flags:
            flags = [f for f in outcome.response.flags.split(",") if f != "-"]
            outcome.response.flags = ",".join([*injected.response_flags, *flags])
        outcome.response.headers = decision.apply_response_headers(outcome.response.headers)
        return outcome

    async def _after_fault(
        self,
        request: HttpRequest,
        l7: Request,
        decision: RouteDecision,
        injected: fault.FaultDecision,
        original: Endpoint | None = None,
    ) -> _Outcome:
        if injected.delay is not None:
            self._active_faults += 1
            try:
                await asyncio.sleep(injected.delay)  # counted in the request's duration
            finally:
                self._active_faults -= 1
        if injected.aborts:
            status, headers, body = injected.local_reply(l7)  # gRPC-shaped for a gRPC request
            data = body.encode()
            headers.append(("content-length", str(len(data))))
            reply = HttpResponse(status, headers, data, length=len(data), details="fault_filter_abort")
            return _Outcome(reply, decision)
        if decision.direct_response is not None:
            direct = decision.direct_response
            reply = local_reply(False, direct.status, direct.body, details="direct_response", headers=direct.headers)
            return _Outcome(reply, decision)
        head = RequestHead(
            decision.path or request.target,
            decision.authority or request.authority,
            decision.apply_request_headers(l7.headers),
        )
        for cluster in decision.mirror_clusters:
            self._mirror(cluster, request, head)
        forwarded = await self._forwarder.forward(request, head, decision, original)
        local = not forwarded.response.upstream_host
        return _Outcome(forwarded.response, decision, forwarded.endpoint, local)

    def _mirror(self, cluster_name: str, request: HttpRequest, head: RequestHead) -> None:
        """Fire and forget a copy (Envoy appends `-shadow` to the authority); its answer is dropped."""
        state = self._clusters.get(cluster_name)
        endpoint = state.pick() if state is not None else None
        if state is None or endpoint is None:
            return
        host, sep, port = head.authority.rpartition(":")
        shadow = RequestHead(head.path, f"{host}-shadow:{port}" if sep else f"{head.authority}-shadow", head.headers)
        http2 = request.protocol == "HTTP/2" or request.is_grpc

        async def send() -> None:
            try:
                upstream = await asyncio.wait_for(
                    self._upstreams.request(state, endpoint, request, shadow, http2), MIRROR_TIMEOUT
                )
                await discard(upstream.body)
            except Exception as e:  # a mirror's failure never touches the real request
                log.debug("mirror to %s failed: %s", cluster_name, e)

        task = asyncio.ensure_future(send())
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    # --- telemetry --------------------------------------------------------------------------------

    def _observe(self, down: Downstream, request: HttpRequest, outcome: _Outcome, started: float) -> None:
        """Metrics and the access-log line once the body has gone out (byte counts, trailers)."""
        response = outcome.response
        body = response.body
        if isinstance(body, bytes):
            self._record(down, request, outcome, started, len(body))
            return

        async def counted():
            size = 0
            try:
                async for chunk in body:
                    size += len(chunk)
                    yield chunk
            finally:
                self._record(down, request, outcome, started, size)

        response.body = counted()

    def _service_host(self, down: Downstream, decision: RouteDecision | None) -> str:
        """The destination service: a waypoint's chain names it; a gateway's chain is a listener,
        so its requests are reported against the routed cluster's host
        (`inbound-vip|{port}|{subset}|{host}`), as Istio's gateways do."""
        if self._reporting.reporter == "source":
            cluster = decision.cluster if decision is not None else None
            return cluster.rpartition("|")[2] if cluster else ""
        return down.chain.host

    def _record(self, down: Downstream, request: HttpRequest, outcome: _Outcome, started: float, size: int) -> None:
        response, decision, endpoint = outcome.response, outcome.decision, outcome.endpoint
        duration = (time.monotonic() - started) * 1000
        grpc_status = next((v for k, v in (response.trailers or response.headers) if k == "grpc-status"), None)
        self._metrics.record(
            RequestRecord(
                source=self._reporting.source_of(down.source),
                reporter=self._reporting.reporter,
                service_host=self._service_host(down, decision),
                destination_principal=endpoint.identity if endpoint else None,
                destination_workload=endpoint.workload if endpoint else None,
                destination_namespace=endpoint.namespace if endpoint else None,
                destination_cluster=self._cluster_id,
                protocol="grpc" if request.is_grpc else "http",
                status=response.status,
                grpc_status=grpc_status,
                flags=response.flags,
                duration_ms=duration,
                request_bytes=len(request.body),
                response_bytes=size,
            )
        )
        if access_log_enabled():
            self._log(down, request, outcome, duration, grpc_status, size)
        if outcome.span is not None:
            outcome.span.finish(
                decision.route_name if decision else None,
                method=request.method,
                path=request.target,
                status=response.status,
                authority=request.authority,
                upstream_cluster=decision.cluster if decision else None,
                response_flags=response.flags,
                source_principal=down.source.principal,
                request_id=request.header("x-request-id"),
            )

    def _log(
        self,
        down: Downstream,
        request: HttpRequest,
        outcome: _Outcome,
        duration: float,
        grpc_status: str | None,
        size: int,
    ) -> None:
        """The access-log line (built only when the access log is on)."""
        response, decision = outcome.response, outcome.decision
        log_request(
            {
                "method": request.method,
                "path": request.target.split("?", 1)[0],
                "authority": request.authority,
                "protocol": request.protocol,
                "status": response.status,
                "grpc_status": grpc_status,
                "response_flags": response.flags,
                "response_code_details": response.details or ("" if outcome.local else "via_upstream"),
                "upstream_host": response.upstream_host or None,
                "duration_ms": round(duration, 3),
                "bytes_received": len(request.body),
                "bytes_sent": size,
                "source_principal": down.source.principal,
                "route_name": decision.route_name if decision else None,
                "upstream_cluster": decision.cluster if decision else None,
                "filter_chain": down.chain.name,
                "request_id": request.header("x-request-id"),
                "local_reply": response.body.decode(errors="replace")
                if outcome.local and isinstance(response.body, bytes)
                else None,
                **({"sni": down.sni} if down.sni else {}),
            }
        )


def _add_request_headers(request: HttpRequest, ids: random.Random) -> None:
    """`x-forwarded-proto`, `x-request-id` when missing, W3C `traceparent` (a new trace when
    absent: version 00, 16-byte trace id, 8-byte parent id, sampled).

    The ids come from `ids`, a PRNG seeded from the OS, not from `uuid4` / `secrets` (a getrandom
    system call each): they must be unique, not secret (Envoy's come from its own PRNG too)."""
    names = {k for k, _ in request.headers}
    if "x-forwarded-proto" in names:
        request.headers = [(k, v) for k, v in request.headers if k != "x-forwarded-proto"]
    request.headers.append(("x-forwarded-proto", request.scheme))
    if "x-request-id" not in names:
        request.headers.append(("x-request-id", _uuid4(ids.getrandbits(128))))
    if "traceparent" not in names:
        trace_id, parent_id = ids.getrandbits(128) or 1, ids.getrandbits(64) or 1  # all-zero ids are invalid
        request.headers.append(("traceparent", f"00-{trace_id:032x}-{parent_id:016x}-01"))


def _uuid4(bits: int) -> str:
    """A version-4 UUID (RFC 9562 §5.4) in its text form, from 128 random bits."""
    h = f"{(bits & _UUID_CLEAR) | _UUID_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version and variant bits
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, variant 10
