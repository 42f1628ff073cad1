"""`mesh-runtime`: the pod runtime of one node."""

from __future__ import annotations

import asyncio
import sys

from mesh import logs
from mesh.settings import parse_settings

from . import app, sandbox
from .settings import ConfigError, RuntimeSettings, resolve

PROG = "mesh-runtime"


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(
        RuntimeSettings,
        PROG,
        "The mesh's kubelet: runs the pods of one node in their own network namespaces, wired by the CNI chain.",
        argv,
    )
    logs.setup(settings.log_level)
    try:
        config = resolve(settings, need_api=not settings.cleanup)
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    problem = sandbox.private_mount_namespace()
    if problem:
        print(f"{PROG}: {problem}", file=sys.stderr)
        raise SystemExit(2)
    try:
        if settings.cleanup:
            released = asyncio.run(app.cleanup(config))
            print(f"{PROG}: released {released} pods", file=sys.stderr)
            return
        asyncio.run(app.run(config))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
