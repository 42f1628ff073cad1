"""The access log: one JSON line per request on stderr, written in batches.

Per line, going through `logging` (a LogRecord, the formatter, a handler lock and a `write` plus
`flush` system call) cost the waypoint about a tenth of its CPU under load (py-spy,
bench/README.md). Lines are therefore formatted here and written by the event loop at most
every `interval` seconds or once `limit` bytes wait, as Envoy buffers its access-log sinks
(its default flush interval is 1 s; a tenth of that keeps `kubectl logs` prompt). The line's
shape is that of every other log line (mesh/logs.py): ts, level, logger, msg, then the fields.
Whether it is written at all still follows the `waypoint.access` logger's level.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TextIO

import orjson

LOGGER = "waypoint.access"


class AccessLog:
    """Buffered JSON lines for one sink (stderr unless told otherwise)."""

    def __init__(self, sink: TextIO | None = None, interval: float = 0.1, limit: int = 64 << 10) -> None:
        self._sink = sink
        self._interval = interval
        self._limit = limit
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        self._logger = logging.getLogger(LOGGER)

    @property
    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, object]) -> None:
        """Queue one line: `{"ts", "level": "info", "logger", "msg": "request", **fields}`."""
        now = time.time()
        second = int(now)
        if second != self._second:  # the date part changes once a second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        ts = f"{self._stamp}.{int((now - second) * 1000):03d}Z"
        line = orjson.dumps({"ts": ts, "level": "info", "logger": LOGGER, "msg": "request", **fields}, default=str)
        self._lines.append(line.decode())
        self._size += len(line) + 1
        if self._size >= self._limit:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)
            except RuntimeError:  # no loop (a test, or shutdown): write now
                self.flush()

    def flush(self) -> None:
        """Write what is queued (also at exit and at the end of a drain)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        self._size = 0
        sink = self._sink or sys.stderr
        try:
            sink.write(text)
            sink.flush()
        except (OSError, ValueError):  # stderr gone (closed pipe): a log line is not worth a crash
            pass
