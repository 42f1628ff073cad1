"""The Node heartbeat: this node's `status` (Ready, addresses, nodeInfo), patched periodically.

A node token may write its own Node's status (services/istiod/node_restriction.py). The Ready
condition keeps its `lastTransitionTime` while it stays True; `lastHeartbeatTime` moves on every
beat, which is what a liveness job looks at.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from collections.abc import Sequence
from typing import Any

import httpx

from mesh.kubeclient import NODES, ApiStatusError, KubeClient

from .containers import now_rfc3339

log = logging.getLogger("mesh-runtime.heartbeat")
Json = dict[str, Any]
KUBELET_VERSION = "mesh-runtime"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def node_info() -> Json:
    """`status.nodeInfo` of this machine."""
    return {
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": "",
        "containerRuntimeVersion": "mesh-runtime://0.1.0",
        "operatingSystem": "linux",
        "architecture": _ARCH.get(platform.machine(), platform.machine()),
        "kernelVersion": platform.release(),
        "osImage": "Linux",
        "machineID": "",
        "systemUUID": "",
        "bootID": "",
    }


def node_status(node: str, node_ip: str | None, previous_conditions: Sequence[Json], now: str) -> Json:
    """The status one heartbeat writes (pure)."""
    before = next((c for c in previous_conditions if c.get("type") == "Ready"), None)
    transition = before.get("lastTransitionTime") if before and before.get("status") == "True" else None
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "mesh-runtime is posting ready status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": transition or now,
    }
    addresses = [{"type": "Hostname", "address": node}]
    if node_ip:
        addresses.insert(0, {"type": "InternalIP", "address": node_ip})
    return {"conditions": [ready], "addresses": addresses, "nodeInfo": node_info()}


async def beat(client: KubeClient, node: str, node_ip: str | None, previous: Sequence[Json]) -> list[Json]:
    """One heartbeat; the conditions now stored."""
    status = node_status(node, node_ip, previous, now_rfc3339())
    stored = await client.patch(NODES, node, {"status": status}, status=True)
    return (stored.get("status") or {}).get("conditions") or status["conditions"]


async def heartbeat_loop(client: KubeClient, node: str, node_ip: str | None, interval: float) -> None:
    """Beat every `interval` seconds until cancelled; API errors are logged and retried."""
    previous: list[Json] = []
    try:
        current = await client.get(NODES, node)
        previous = (current.get("status") or {}).get("conditions") or []
    except (ApiStatusError, httpx.HTTPError, OSError) as e:
        log.warning("reading Node %s: %s", node, e)
    while True:
        try:
            previous = await beat(client, node, node_ip, previous)
        except (ApiStatusError, httpx.HTTPError, OSError) as e:
            log.warning("heartbeat of Node %s failed: %s", node, e)
        await asyncio.sleep(interval)
