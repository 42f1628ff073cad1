"""`mesh-node-agent`: the node's CNI agent (enrollment, in-pod redirection, ZDS server)."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from mesh import logs
from mesh.settings import parse_settings

from .app import run
from .settings import AgentSettings


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(
        AgentSettings,
        "mesh-node-agent",
        "The node agent: captures the traffic of ambient pods on this node and hands them to ztunnel.",
        argv,
    )
    logs.setup(settings.log_level)
    try:
        node, conn = settings.node_name(), settings.connection()
    except (ValueError, OSError) as e:
        detail = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else str(e)
        print(f"mesh-node-agent: {detail}", file=sys.stderr)
        raise SystemExit(2) from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings, node, conn))


if __name__ == "__main__":
    main()
