"""`mesh-xds`: the xDS push service."""

from __future__ import annotations

import asyncio
import sys

from mesh import logs
from mesh.settings import parse_settings

from .app import run
from .settings import XdsSettings


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(
        XdsSettings,
        "mesh-xds",
        "The mesh's xDS push service (delta ADS for ztunnels; state-of-the-world and delta for gRPC clients).",
        argv,
    )
    logs.setup(settings.log_level)
    try:
        asyncio.run(run(settings))
    except FileNotFoundError as e:
        print(
            f"mesh-xds: {e.filename} not found (start istiod and mesh-ca with the same --state-dir, "
            "or pass --istiod / --cert-file / --key-file / --roots-file)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
