"""The CA's audit trail: one JSON line per decision (who asked for what, and what was decided).

Kept in `{state}/ca-audit.log` with mode 0600. Clients get a short generic error; the full
reason is here and in the structured log. No secret (token, key) is ever written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson


class AuditLog:
    """Appends decisions; safe to share within one event loop."""

    def __init__(self, path: Path):
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=0)

    def record(self, *, decision: str, reason: str, node: str = "", identity: str = "", **extra: Any) -> None:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "decision": decision,
            "reason": reason,
            "node": node,
            "identity": identity,
            **extra,
        }
        self._file.write(orjson.dumps(entry) + b"\n")

    def close(self) -> None:
        self._file.close()


def read_audit(path: Path) -> list[dict[str, Any]]:
    """Every recorded decision (for tests and `meshctl`)."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
