"""`ztunnel`: the node proxy (HBONE mTLS, L4 authorization, identities, telemetry).

Run inside the node's network namespace with the node directory, as `meshctl cluster up` does:
`nsenter --net=/var/run/netns/mesh-node-1 -- ztunnel --state-dir {cluster}/nodes/node-1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from mesh import logs
from mesh.plain_settings import parse

from .app import request_certificate, run
from .settings import ConfigError, ZtunnelSettings, resolve


def _install_uvloop() -> None:
    """uvloop where available: it halves relay latency and speeds TLS (Lessons 3)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> None:
    settings = parse(
        ZtunnelSettings,
        "ztunnel",
        "The node proxy: captures each enrolled pod's TCP, carries it over HBONE mTLS, authorizes and counts it.",
        argv,
    )
    logs.setup(settings.log_level)
    try:
        config = resolve(settings)
    except ConfigError as e:
        print(f"ztunnel: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    _install_uvloop()
    if settings.request_certificate:
        issued, report = asyncio.run(request_certificate(config, settings.request_certificate))
        print(report)
        raise SystemExit(0 if issued else 3)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(config))
    except OSError as e:  # e.g. the admin port is taken, or the node IP is not in this netns
        print(f"ztunnel: cannot start: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
