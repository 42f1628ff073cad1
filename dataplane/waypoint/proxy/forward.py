"""One routed request to its cluster, as Envoy's router does it: the `max_requests` breaker, an
endpoint picked by the cluster's policy (avoiding hosts already tried, as Istio's
`previous_hosts` retry predicate asks), attempts with the route's retry rules (each within
`per_try_timeout`, jittered back-off between them, a `max_retries` unit per retry), every
outcome fed to outlier detection, and the route timeout over all of it.

Local answers: no cluster 503 NC, breaker overflow 503 UO, no endpoint 503 UH, connect failure
503 UF, reset 503 UC, timeout 504 UT; URX is added when the last outcome was one the policy
retries but the retries were spent.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from ..l7.model import UpstreamFailure, UpstreamResult
from ..l7.retry import RetryRules
from ..l7.routing import RouteDecision
from ..l7.upstreams import ClusterState, Endpoint, LbPolicy, Resource
from . import local_reply as replies
from .clusters import UpstreamClusters
from .messages import HttpRequest, HttpResponse
from .upstream import Upstreams
from .upstream_response import ConnectFailure, Overflow, RequestHead, UpstreamReset, UpstreamResponse, discard


@dataclass
class Forwarded:
    """The answer and the endpoint of the last attempt (None when none was made)."""

    response: HttpResponse
    endpoint: Endpoint | None


@dataclass
class _Attempt:
    result: UpstreamResult
    response: UpstreamResponse | None = None
    error: str = ""


class Forwarder:
    """Sends routed requests upstream (see the module docstring). One per process."""

    def __init__(self, clusters: UpstreamClusters, upstreams: Upstreams, rng: random.Random) -> None:
        self._clusters = clusters
        self._upstreams = upstreams
        self._rng = rng

    async def forward(
        self, request: HttpRequest, head: RequestHead, decision: RouteDecision, original: Endpoint | None = None
    ) -> Forwarded:
        """Answer a request routed to `decision.cluster` (never raises for the request's own
        failure). `original` is the host an ORIGINAL_DST cluster sends to (the CONNECT's
        destination, with its workload chain's tunnel and identity; original_dst.py)."""
        grpc = request.is_grpc
        state = self._clusters.get(decision.cluster or "")
        if state is None:
            return Forwarded(replies.local_reply(grpc, 503, "", flags="NC", details="cluster_not_found"), None)
        if not state.breakers.try_acquire(Resource.REQUESTS):
            return Forwarded(replies.local_reply(grpc, 503, replies.OVERFLOW, flags="UO", details="overflow"), None)
        tried: list[Endpoint] = []
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the coroutine in a new Task per call
            # (two per request with the per-try timeout); a timeout is one timer handle.
            async with asyncio.timeout(decision.timeout):
                return await self._attempts(state, request, head, decision, tried, original)
        except TimeoutError:
            reply = replies.local_reply(grpc, 504, replies.TIMEOUT, flags="UT", details="upstream_response_timeout")
            return Forwarded(reply, tried[-1] if tried else None)
        finally:
            state.breakers.release(Resource.REQUESTS)

    async def _attempts(
        self,
        state: ClusterState,
        request: HttpRequest,
        head: RequestHead,
        decision: RouteDecision,
        tried: list,
        original: Endpoint | None,
    ) -> Forwarded:
        rules = decision.retry
        # gRPC is always HTTP/2; otherwise the cluster's protocol options decide (the Service
        # port's appProtocol), and a port that does not say follows the downstream's version.
        wanted = state.upstream_http2
        http2 = request.is_grpc or (wanted if wanted is not None else request.protocol == "HTTP/2")
        for attempt in range(1, rules.num_retries + 2):
            provided = state.lb_policy is LbPolicy.CLUSTER_PROVIDED
            endpoint = original if provided else state.pick(exclude=tried)
            if endpoint is None:
                reply = replies.local_reply(request.is_grpc, 503, replies.NO_HEALTHY_UPSTREAM, flags="UH")
                return Forwarded(_retried(reply, attempt > 1), tried[-1] if tried else None)
            tried.append(endpoint)
            outcome = await self._attempt(state, endpoint, request, head, http2, rules.per_try_timeout)
            if not rules.should_retry(outcome.result, attempt) or not state.breakers.try_acquire(Resource.RETRIES):
                return Forwarded(self._answer(request, endpoint, outcome, rules, attempt), endpoint)
            try:
                if outcome.response is not None:
                    await discard(outcome.response.body)
                await asyncio.sleep(rules.backoff(attempt, self._rng))
            finally:
                state.breakers.release(Resource.RETRIES)
        raise AssertionError("unreachable: the last attempt is never retried")

    async def _attempt(
        self,
        state: ClusterState,
        endpoint: Endpoint,
        request: HttpRequest,
        head: RequestHead,
        http2: bool,
        per_try_timeout: float | None,
    ) -> _Attempt:
        """One try; its outcome is fed to outlier detection even when the route timeout cuts it."""
        outcome = _Attempt(UpstreamResult(failure=UpstreamFailure.PER_TRY_TIMEOUT))
        state.request_started(endpoint)
        try:
            if per_try_timeout is None:  # the usual case: only the route timeout applies
                response = await self._upstreams.request(state, endpoint, request, head, http2)
            else:
                async with asyncio.timeout(per_try_timeout):
                    response = await self._upstreams.request(state, endpoint, request, head, http2)
            outcome = _Attempt(UpstreamResult(status=response.status, headers=tuple(response.headers)), response)
        except TimeoutError:
            outcome.error = "per-try timeout"
        except ConnectFailure as e:
            outcome = _Attempt(UpstreamResult(failure=UpstreamFailure.CONNECT_FAILURE), error=str(e))
        except UpstreamReset as e:
            failure = UpstreamFailure.REFUSED_STREAM if e.refused else UpstreamFailure.RESET
            outcome = _Attempt(UpstreamResult(failure=failure), error=str(e))
        except Overflow as e:
            outcome = _Attempt(UpstreamResult(failure=UpstreamFailure.OVERFLOW), error=str(e))
        finally:
            state.request_finished(endpoint, outcome.result)
        return outcome

    def _answer(
        self, request: HttpRequest, endpoint: Endpoint, outcome: _Attempt, rules: RetryRules, attempt: int
    ) -> HttpResponse:
        exhausted = attempt > 1 and rules.retriable(outcome.result)
        upstream = outcome.response
        if upstream is not None:
            response = HttpResponse(upstream.status, upstream.headers, upstream.body, length=upstream.length)
            response.upstream_host = f"{endpoint.address}:{endpoint.port}"
            if upstream.headers_only:
                response.body = b""
            elif not isinstance(upstream.body, bytes):  # bytes: read whole with the head, no trailers
                response.body = _with_trailers(upstream, response)
            return _retried(response, exhausted)
        grpc = request.is_grpc
        failure = outcome.result.failure
        if failure is UpstreamFailure.OVERFLOW:
            reply = replies.local_reply(grpc, 503, replies.OVERFLOW, flags="UO", details="overflow")
        elif failure is UpstreamFailure.PER_TRY_TIMEOUT:
            reply = replies.local_reply(grpc, 504, replies.TIMEOUT, flags="UT", details="upstream_per_try_timeout")
        elif failure is UpstreamFailure.CONNECT_FAILURE:
            reply = replies.local_reply(grpc, 503, replies.CONNECT_FAILURE, flags="UF", details=outcome.error)
        elif failure is UpstreamFailure.REFUSED_STREAM:
            reply = replies.local_reply(grpc, 503, replies.REFUSED, flags="UR", details=outcome.error)
        else:
            reply = replies.local_reply(grpc, 503, replies.RESET, flags="UC", details=outcome.error)
        return _retried(reply, exhausted)


def _retried(response: HttpResponse, exhausted: bool) -> HttpResponse:
    """Add URX (upstream retry limit exceeded) when the retries were spent."""
    if exhausted:
        response.flags = "URX" if response.flags == "-" else f"{response.flags},URX"
    return response


async def _with_trailers(upstream: UpstreamResponse, response: HttpResponse):
    """The upstream body; its trailers are handed to the downstream response at the end."""
    async for chunk in upstream.body:
        yield chunk
    if upstream.trailers:
        response.trailers = upstream.trailers
