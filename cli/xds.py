"""`meshctl proxy-status` and `meshctl x xds-config`: what mesh-xds serves, and to whom."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from typing import Any

import httpx

from mesh.grpc_client import open_channel, tls_context
from mesh.proto_gen.istio.security import authorization_pb2
from mesh.proto_gen.istio.workload import workload_pb2
from mesh.xds.delta_client import DeltaClient

ADDRESS = "type.googleapis.com/istio.workload.Address"
AUTHZ = "type.googleapis.com/istio.security.Authorization"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded like istioctl's output."""
    widths = [max(len(str(x)) for x in [h, *[r[i] for r in rows]]) for i, h in enumerate(headers)]
    lines = ["   ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def proxy_status(admin_url: str) -> tuple[str, list[dict[str, Any]]]:
    streams = httpx.get(f"{admin_url}/debug/syncz", timeout=10).json()
    types = sorted({t for s in streams for t in s["types"]})
    rows = [
        [s["id"], s["kind"], s["node"] or s["identity"], *[s["types"].get(t, {}).get("status", "-") for t in types]]
        for s in streams
    ]
    if not rows:
        return "No proxies are connected to mesh-xds.", streams
    return table(["NAME", "KIND", "NODE/IDENTITY", *[t.upper() for t in types]], rows), streams


async def fetch(address: str, roots: bytes | None, token: str, timeout: float = 10) -> DeltaClient:
    """Everything a ztunnel holding `token` would receive."""
    channel = open_channel(address, tls_context(roots) if roots else None)
    client = DeltaClient(channel, "meshctl~xds-config", token=token)
    client.watch(ADDRESS)
    client.watch(AUTHZ)
    task = asyncio.create_task(client.run_once())
    try:
        synced = asyncio.ensure_future(
            client.wait_for(lambda: client.types[ADDRESS].acked > 0 and client.types[AUTHZ].acked > 0, timeout)
        )
        await asyncio.wait((synced, task), return_when=asyncio.FIRST_COMPLETED)
        if not synced.done():  # the stream ended first: its error says why (RpcError)
            synced.cancel()
            task.result()
            raise ConnectionError("mesh-xds ended the stream before sending both types")
        synced.result()
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task  # ended before the channel closes, so no failure is left unretrieved
        channel.close()
    return client


def _ip(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw)) if raw else ""


def render(client: DeltaClient) -> str:
    """Workloads, services and policies, in the shape of istioctl's ztunnel-config tables."""
    workloads, services = [], []
    for _name, held in sorted(client.types[ADDRESS].resources.items()):
        address = workload_pb2.Address()
        held.resource.Unpack(address)
        if address.HasField("workload"):
            w = address.workload
            protocol = workload_pb2.TunnelProtocol.Name(w.tunnel_protocol)
            waypoint = _ip(w.waypoint.address.address) if w.HasField("waypoint") else "None"
            workloads.append(
                [
                    w.namespace,
                    w.name,
                    ",".join(_ip(a) for a in w.addresses),
                    w.node or "-",
                    waypoint,
                    "HBONE" if protocol == "HBONE" else "TCP",
                ]
            )
        else:
            s = address.service
            waypoint = _ip(s.waypoint.address.address) if s.HasField("waypoint") else "None"
            services.append([s.namespace, s.name, ",".join(_ip(a.address) for a in s.addresses) or "None", waypoint])
    policies = []
    for _name, held in sorted(client.types[AUTHZ].resources.items()):
        policy = authorization_pb2.Authorization()
        held.resource.Unpack(policy)
        policies.append(
            [
                policy.namespace,
                policy.name,
                authorization_pb2.Action.Name(policy.action),
                authorization_pb2.Scope.Name(policy.scope),
                str(len(policy.rules)),
            ]
        )
    return "\n\n".join(
        [
            table(["NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"], workloads),
            table(["NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT"], services),
            table(["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE", "RULES"], policies),
        ]
    )
