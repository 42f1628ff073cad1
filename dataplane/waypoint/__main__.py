"""`waypoint --gateway N/G`: the L7 proxy of a waypoint Gateway (docs/waypoint.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from mesh import logs
from mesh.settings import parse_settings

from .app import run
from .settings import ConfigError, WaypointSettings, resolve


def _install_uvloop() -> None:
    """uvloop where available, as ztunnel (Lessons 3)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _lighten_log_records() -> None:
    """Skip what every LogRecord gathers and our JSON lines never print: the caller's file and
    line (a stack walk per record), thread, process and multiprocessing names. The logging
    manual's own "Optimization" advice; it matters at one access-log line per request."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(
        WaypointSettings,
        "waypoint",
        "The waypoint proxy: terminates HBONE, applies L7 authorization, routing and resilience, counts requests.",
        argv,
    )
    logs.setup(settings.log_level)
    _lighten_log_records()
    try:
        config = resolve(settings)
    except ConfigError as e:
        print(f"waypoint: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    _install_uvloop()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(config))
    except OSError as e:
        print(f"waypoint: cannot start: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
