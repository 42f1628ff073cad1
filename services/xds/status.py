"""proxy-status: which proxies are connected and whether each has acknowledged the current config."""

from __future__ import annotations

import time
from typing import Any

from .hub import Hub
from .types import SHORT


def sync_status(hub: Hub) -> list[dict[str, Any]]:
    """One entry per stream, istioctl proxy-status style: per type SYNCED, STALE or NOT SENT."""
    out = []
    for conn in sorted(hub.connections.values(), key=lambda c: c.id):
        types = {}
        for type_url, sub in sorted(conn.subs.items()):
            current = hub.tables[type_url].version if type_url in hub.tables else 0
            if sub.sent_version == 0:
                state = "NOT SENT"
            elif sub.acked_version == current and not sub.awaiting:
                state = "SYNCED"
            else:
                state = "STALE"
            types[SHORT.get(type_url, type_url)] = {
                "status": state,
                "acked_version": sub.acked_version,
                "sent_version": sub.sent_version,
                "current_version": current,
                "resources": len(sub.known),
                "last_nack": sub.last_nack,
            }
        out.append(
            {
                "id": conn.id,
                "kind": conn.peer.kind,
                "protocol": conn.protocol,
                "node": conn.peer.node,
                "identity": conn.peer.identity,
                "node_id": conn.node_id,
                "connected_seconds": round(time.time() - conn.connected_at, 1),
                "responses": conn.responses,
                "bytes_sent": conn.bytes_sent,
                "types": types,
            }
        )
    return out
