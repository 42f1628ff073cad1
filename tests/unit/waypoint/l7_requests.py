"""Requests for the L7 engine's unit tests."""

from __future__ import annotations

from typing import Any

from dataplane.waypoint.l7.model import Request

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
NOTSLEEP = "spiffe://cluster.local/ns/other/sa/notsleep"


def make_request(
    method: str = "GET",
    path: str = "/",
    *,
    authority: str = "reviews.default.svc.cluster.local:9080",
    headers: list[tuple[str, str]] | None = None,
    port: int = 9080,
    source_ip: str = "198.18.1.5",
    principal: str | None = SLEEP,
    **extra: Any,
) -> Request:
    """A request as the waypoint hands it to the L7 engine."""
    return Request(
        method=method,
        path=path,
        authority=authority,
        headers=list(headers or []),
        destination_port=port,
        source_ip=source_ip,
        source_principal=principal,
        **extra,
    )
