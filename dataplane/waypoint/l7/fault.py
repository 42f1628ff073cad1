"""Fault injection: Envoy's `envoy.filters.http.fault` (HTTPFault) decided for one request.

The route's `typed_per_filter_config["envoy.filters.http.fault"]` (routing.py unpacks it) is
decided here with the injected Random; the proxy then sleeps and/or answers. Envoy's rules:
- the fault applies only when every `headers` matcher matches, the route's cluster is
  `upstream_cluster` (when set), the downstream node is in `downstream_nodes` (when set), and
  fewer than `max_active_faults` faults are running (when set);
- delay and abort are drawn independently, each by its FractionalPercent; an unset percentage
  is 0 % (the proto's default — Istio always sets one);
- `header_delay` / `header_abort` take the value from the request (`x-envoy-fault-delay-request`
  in ms, `x-envoy-fault-abort-request`, `x-envoy-fault-abort-grpc-request`), and the
  `…-percentage` headers can only lower the configured percentage;
- the delay runs first, then the abort; an abort is a local reply: for a gRPC request always
  HTTP 200 with `grpc-status` (the configured one, or the HTTP status mapped as Envoy maps it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from . import matchers
from .model import Request

DELAY_HEADER = "x-envoy-fault-delay-request"
DELAY_PERCENT_HEADER = "x-envoy-fault-delay-request-percentage"
ABORT_HEADER = "x-envoy-fault-abort-request"
ABORT_GRPC_HEADER = "x-envoy-fault-abort-grpc-request"
ABORT_PERCENT_HEADER = "x-envoy-fault-abort-request-percentage"
DOWNSTREAM_NODE_HEADER = "x-envoy-downstream-service-node"
ABORT_BODY = "fault filter abort"
DELAY_FLAG, ABORT_FLAG = "DI", "FI"  # Envoy's response flags: delay injected, fault injected

# Envoy's Grpc::Utility::httpToGrpcStatus, for an HTTP abort answered to a gRPC client.
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
_GRPC_UNKNOWN = 2


def http_to_grpc_status(status: int) -> int:
    """The gRPC status Envoy gives a gRPC client for a local HTTP status (httpToGrpcStatus)."""
    return _HTTP_TO_GRPC.get(status, _GRPC_UNKNOWN)


@dataclass(frozen=True, kw_only=True)
class FaultDecision:
    """What to inject: a delay in seconds and/or an abort (an HTTP or a gRPC status)."""

    delay: float | None = None
    abort_http_status: int | None = None
    abort_grpc_status: int | None = None

    @property
    def aborts(self) -> bool:
        """Whether the request is answered locally instead of forwarded."""
        return self.abort_http_status is not None or self.abort_grpc_status is not None

    @property
    def response_flags(self) -> tuple[str, ...]:
        """Envoy's %RESPONSE_FLAGS% entries for what was injected."""
        return ((DELAY_FLAG,) if self.delay is not None else ()) + ((ABORT_FLAG,) if self.aborts else ())

    def local_reply(self, request: Request) -> tuple[int, list[tuple[str, str]], str]:
        """The abort response (status, headers, body) as Envoy's sendLocalReply shapes it."""
        if request.is_grpc:
            grpc = self.abort_grpc_status
            if grpc is None:
                grpc = http_to_grpc_status(self.abort_http_status or 0)
            headers = [("content-type", "application/grpc"), ("grpc-status", str(grpc)), ("grpc-message", ABORT_BODY)]
            return 200, headers, ""
        status = self.abort_http_status if self.abort_http_status is not None else 200
        if self.abort_http_status is None:
            # A gRPC abort configured for a non-gRPC request: still a gRPC-shaped reply.
            return status, [("grpc-status", str(self.abort_grpc_status))], ABORT_BODY
        return status, [("content-type", "text/plain")], ABORT_BODY


NO_FAULT = FaultDecision()


def decide(
    fault: fault_pb2.HTTPFault | None,
    request: Request,
    rng: random.Random,
    *,
    cluster: str | None = None,
    active_faults: int = 0,
) -> FaultDecision:
    """Decide the fault for one request on a route to `cluster`; `active_faults` is how many
    injected faults are in progress (for `max_active_faults`)."""
    if fault is None or not _applies(fault, request, cluster, active_faults):
        return NO_FAULT
    delay = _delay(fault, request, rng) if fault.HasField("delay") else None
    http_status, grpc_status = _abort(fault, request, rng) if fault.HasField("abort") else (None, None)
    return FaultDecision(delay=delay, abort_http_status=http_status, abort_grpc_status=grpc_status)


def _applies(fault: fault_pb2.HTTPFault, request: Request, cluster: str | None, active_faults: int) -> bool:
    if fault.upstream_cluster and fault.upstream_cluster != cluster:
        return False
    if fault.downstream_nodes and request.header(DOWNSTREAM_NODE_HEADER) not in fault.downstream_nodes:
        return False
    if fault.HasField("max_active_faults") and active_faults >= fault.max_active_faults.value:
        return False
    # Compiled per call: a fault config is small and per route; routing keeps the message.
    return all(matchers.header_matcher(h)(request) for h in fault.headers)


def _percent_hit(configured: percent_pb2.FractionalPercent, header: str, request: Request, rng: random.Random) -> bool:
    percent = configured
    override = _int_header(request, header)
    if override is not None and override < configured.numerator:
        # The header can only lower the numerator (same denominator), never raise it.
        percent = percent_pb2.FractionalPercent(numerator=override, denominator=configured.denominator)
    return matchers.sampled(percent, rng)


def _delay(fault: fault_pb2.HTTPFault, request: Request, rng: random.Random) -> float | None:
    d = fault.delay
    kind = d.WhichOneof("fault_delay_secifier")
    if kind == "fixed_delay":
        seconds: float | None = d.fixed_delay.ToTimedelta().total_seconds()
    elif kind == "header_delay":
        ms = _int_header(request, DELAY_HEADER)
        seconds = ms / 1000 if ms is not None else None
    else:
        seconds = None
    if seconds is None or not _percent_hit(d.percentage, DELAY_PERCENT_HEADER, request, rng):
        return None
    return seconds


def _abort(fault: fault_pb2.HTTPFault, request: Request, rng: random.Random) -> tuple[int | None, int | None]:
    a = fault.abort
    kind = a.WhichOneof("error_type")
    http_status: int | None = None
    grpc_status: int | None = None
    if kind == "http_status":
        http_status = a.http_status
    elif kind == "grpc_status":
        grpc_status = a.grpc_status
    elif kind == "header_abort":
        http_status = _int_header(request, ABORT_HEADER)
        grpc_status = _int_header(request, ABORT_GRPC_HEADER) if http_status is None else None
        if http_status is not None and not 200 <= http_status < 600:
            http_status = None  # Envoy ignores an out-of-range status header
    if http_status is None and grpc_status is None:
        return None, None
    if not _percent_hit(a.percentage, ABORT_PERCENT_HEADER, request, rng):
        return None, None
    return http_status, grpc_status


def _int_header(request: Request, name: str) -> int | None:
    value = request.header(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
