"""Structured logging: one JSON object per line on stderr."""

from __future__ import annotations

import logging
import sys
import time

import orjson

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"ts": ..., "level": ..., "logger": ..., "msg": ..., **extra}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup(level: str = "info") -> None:
    """Send every logger's records to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Runtime levels, as ztunnel's and Envoy's `/logging` admin endpoint change them. `trace` is kept
# for istioctl's vocabulary; Python has nothing below DEBUG.
LEVELS = {
    "off": logging.CRITICAL + 10,
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}
_NAMES = {logging.CRITICAL + 10: "off", logging.CRITICAL: "critical", logging.WARNING: "warn"}


def _level_name(level: int) -> str:
    return _NAMES.get(level) or logging.getLevelName(level).lower()


class LogLevels:
    """A proxy's log levels while it runs: a default (the root logger's) and levels per target.

    A spec is `LEVEL`, `TARGET:LEVEL` or `TARGET=LEVEL` (istioctl writes the first, ztunnel's
    filter syntax the second), comma-separated: `info,access:debug`. A target without a dot is
    one of this proxy's (`access` is `ztunnel.access`); with one it is a logger's full name
    (`mesh.hbone`). A bad spec changes nothing."""

    def __init__(self, proxy: str) -> None:
        self._proxy = proxy
        self._default = logging.getLogger().level  # what the process started with (`setup`)
        self._targets: set[str] = set()

    def parse(self, spec: str) -> dict[str, int]:
        """The levels a spec asks for, by logger name ("" is the default); ValueError says why not."""
        levels: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            target, sep, level = item.replace("=", ":").rpartition(":")
            if sep and not target:
                raise ValueError(f"{item!r}: no target before the level")
            if level.lower() not in LEVELS:
                raise ValueError(f"unknown level {level!r} in {item!r} (one of: {', '.join(LEVELS)})")
            name = target if not target or "." in target else f"{self._proxy}.{target}"
            levels[name] = LEVELS[level.lower()]
        if not levels:
            raise ValueError("no level given (e.g. info, or access:debug)")
        return levels

    def set(self, spec: str) -> None:
        """Apply a spec (all of it, or nothing when any part is bad)."""
        for name, level in self.parse(spec).items():
            logging.getLogger(name or None).setLevel(level)
            if name:
                self._targets.add(name)

    def reset(self) -> None:
        """Back to the level the process started with; targets follow it again."""
        logging.getLogger().setLevel(self._default)
        for name in self._targets:
            logging.getLogger(name).setLevel(logging.NOTSET)
        self._targets.clear()

    def spec(self) -> str:
        """The levels in force as a spec: `info,access=debug`."""
        parts = [_level_name(logging.getLogger().level)]
        for name in sorted(self._targets):
            short = name.removeprefix(f"{self._proxy}.")
            parts.append(f"{short}={_level_name(logging.getLogger(name).level)}")
        return ",".join(parts)

    def describe(self) -> str:
        """`current log level is info,access=debug`, as ztunnel answers."""
        return "current log level is " + self.spec()
