"""The I/O-side pieces of waypoint configuration in mesh-xds: the peer check (only the waypoint's
service account sees its resources), the Gateways a batch asks mesh-worker to reconcile, and the
JWKS cache (served over a local transport)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from services.xds.generators.envoy import EnvoyTranslator
from services.xds.jwks import JwksCache, JwksError, parse_jwks
from services.xds.peers import Peer
from services.xds.types import CLUSTER, LISTENER
from services.xds.visibility import WaypointAccess
from services.xds.waypoint_jobs import affected_waypoints
from tests.unit.xds import objects as o

pytestmark = pytest.mark.unit

BOUND = {"istio.io/use-waypoint": "waypoint"}


def cluster_with_waypoint() -> tuple[o.Cluster, EnvoyTranslator]:
    cluster = o.Cluster(
        o.namespace("default"),
        o.gateway("waypoint"),
        o.service("reviews", selector={"app": "reviews"}, labels=BOUND),
        o.node("node-1"),
    )
    translator = EnvoyTranslator()
    translator.rebuild(cluster.store)
    return cluster, translator


def test_only_the_waypoint_service_account_sees_waypoint_resources() -> None:
    _, translator = cluster_with_waypoint()
    access = WaypointAccess(translator.readers)
    waypoint = Peer("workload", identity="spiffe://cluster.local/ns/default/sa/waypoint")
    sleep = Peer("workload", identity="spiffe://cluster.local/ns/default/sa/sleep")
    other_ns = Peer("workload", identity="spiffe://cluster.local/ns/other/sa/waypoint")
    ztunnel = Peer("ztunnel", node="node-1")
    listener = "waypoint/default/waypoint"
    assert access.visibility(waypoint, LISTENER)(listener)
    for peer in (sleep, other_ns, ztunnel):
        assert not access.visibility(peer, LISTENER)(listener)
    cluster = "inbound-vip|80||reviews.default.svc.cluster.local"
    assert access.visibility(waypoint, CLUSTER)(cluster) and not access.visibility(sleep, CLUSTER)(cluster)
    # Proxyless names stay visible to every workload.
    assert access.visibility(sleep, LISTENER)("reviews.default.svc.cluster.local:80")


def test_the_gateways_a_batch_asks_to_reconcile() -> None:
    cluster, _ = cluster_with_waypoint()
    cluster.apply(o.gateway("ingress", class_name="istio"))
    waypoint_pod = o.pod("waypoint-0", labels={"gateway.networking.k8s.io/gateway-name": "waypoint"})
    changes = [cluster.apply(waypoint_pod), cluster.apply(o.pod("plain", labels={"app": "x"}))]
    assert affected_waypoints(cluster.store, changes) == {("default", "waypoint")}
    ingress = cluster.apply(o.gateway("ingress", class_name="istio", address="198.19.0.9"))
    assert affected_waypoints(cluster.store, [ingress]) == set()
    node = cluster.apply(o.node("node-2"))
    assert affected_waypoints(cluster.store, [node]) == {("default", "waypoint")}


JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}


def test_parse_jwks_refuses_what_is_not_a_key_set() -> None:
    assert json.loads(parse_jwks(json.dumps(JWKS).encode())) == JWKS
    for bad in (b"not json", b"{}", b'{"keys": []}', b"[]"):
        with pytest.raises(JwksError):
            parse_jwks(bad)


def test_the_cache_fetches_in_the_background_and_reports_changes() -> None:
    served = {"https://issuer.example/jwks": httpx.Response(200, json=JWKS)}

    def handler(request: httpx.Request) -> httpx.Response:
        return served.get(str(request.url), httpx.Response(404))

    async def scenario() -> None:
        changed: list[set[str]] = []
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            cache = JwksCache(changed.append, client)
            assert cache.get("https://issuer.example/jwks") is None  # queued, never blocks
            assert cache.get("https://issuer.example/missing") is None
            assert await cache.refresh_due(client) == {"https://issuer.example/jwks"}
            assert json.loads(cache.get("https://issuer.example/jwks") or "") == JWKS
            assert cache.get("https://issuer.example/missing") is None
            assert cache.error("https://issuer.example/missing") == "HTTP 404"

    asyncio.run(scenario())
