"""Giving freed heap memory back to the operating system (glibc's `malloc_trim`).

A proxy's heap grows under load (a bulk transfer queues megabytes of DATA; a thousand tunnels
allocate their buffers) and glibc keeps what was freed in the middle of the heap for reuse, so
the resident set stays at its peak long after the load is gone. ztunnel's memory is a budget,
so it trims every few seconds: measured at under a millisecond on its heap, nothing when there
is nothing to give back. Without glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging

log = logging.getLogger("mesh.heap")

TRIM_INTERVAL = 10.0  # seconds


def _libc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:  # the process's own symbols include libc's (ctypes.util would import shutil and tempfile)
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc_trim()


def trim() -> bool:
    """Return the free pages of the heap to the OS; True if any were."""
    return bool(_malloc_trim(0)) if _malloc_trim is not None else False


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    """Trim every `interval` seconds, forever (run it as a task)."""
    if _malloc_trim is None:
        log.debug("heap: no malloc_trim on this libc; not trimming")
        return
    while True:
        await asyncio.sleep(interval)
        trim()
