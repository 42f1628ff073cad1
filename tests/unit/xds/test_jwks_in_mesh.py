"""A RequestAuthentication's `jwksUri` served inside the mesh: mesh-xds resolves the Service host
to one of its ready endpoints (there is no cluster DNS) and fetches from it, Host header kept."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from services.xds.jwks import JwksCache, resolve_in_mesh
from tests.unit.xds import objects as o

KEYS = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "x": "eA", "y": "eQ"}]}


def _cluster(target_port: int, ip: str = "127.0.0.1") -> o.Cluster:
    ports = [{"name": "http", "port": 80, "targetPort": target_port}]
    return o.Cluster(
        o.namespace("auth"),
        o.service("jwks", ns="auth", selector={"app": "jwks"}, ports=ports, cluster_ip="198.19.0.50"),
        o.pod("jwks-1", ns="auth", ip=ip, labels={"app": "jwks"}),
    )


def test_a_service_host_resolves_to_a_ready_endpoint_and_other_uris_do_not() -> None:
    store = _cluster(8080, ip="198.18.1.7").store
    assert resolve_in_mesh("http://jwks.auth.svc.cluster.local/keys?x=1", store) == "http://198.18.1.7:8080/keys?x=1"
    assert resolve_in_mesh("http://jwks.auth.svc/keys", store) == "http://198.18.1.7:8080/keys"
    assert resolve_in_mesh("http://jwks.auth.svc.cluster.local:9999/keys", store) is None  # no such port
    assert resolve_in_mesh("http://missing.auth.svc.cluster.local/keys", store) is None
    assert resolve_in_mesh("https://jwks.auth.svc.cluster.local/keys", store) is None  # plain HTTP only
    assert resolve_in_mesh("https://issuer.example.com/.well-known/jwks.json", store) is None


def test_the_cache_fetches_an_in_mesh_uri_from_the_endpoint_with_the_service_host() -> None:
    seen_hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen_hosts.append(self.headers.get("host", ""))
            body = json.dumps(KEYS).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = _cluster(server.server_address[1]).store
    uri = "http://jwks.auth.svc.cluster.local/keys"
    try:
        cache = JwksCache(lambda uris: None, resolve=lambda u: resolve_in_mesh(u, store))
        assert cache.get(uri) is None  # queued

        async def fetch() -> set[str]:
            async with httpx.AsyncClient() as client:
                return await cache.refresh_due(client)

        assert asyncio.run(fetch()) == {uri}
        assert json.loads(cache.get(uri)) == KEYS
        assert seen_hosts == ["jwks.auth.svc.cluster.local"]
    finally:
        server.shutdown()


def test_a_failing_fetch_is_retried_soon_then_less_often() -> None:
    import socket
    import time

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    store = _cluster(closed).store
    uri = "http://jwks.auth.svc.cluster.local/keys"
    cache = JwksCache(lambda uris: None, resolve=lambda u: resolve_in_mesh(u, store))
    cache.get(uri)

    async def fail_once() -> float:
        async with httpx.AsyncClient() as client:
            assert await cache.refresh_due(client) == set()
        entry = cache._entries[uri]
        wait, entry.due = entry.due - time.monotonic(), 0.0  # due again at once, for the next round
        return wait

    waits = [asyncio.run(fail_once()) for _ in range(3)]
    assert cache.error(uri)
    assert [round(w) for w in waits] == [1, 2, 4]
