"""What a proxy's memory is made of, for `:15000/debug/memory` (ztunnel and the waypoint).

Istio's ztunnel serves a heap profile on its admin port; this is the Python equivalent: the
resident set from /proc, glibc's heap (what is in use by C and Python allocations, what is
free but still mapped), the live objects the garbage collector tracks counted by type, and,
when the process was started with `PYTHONTRACEMALLOC=1`, the source lines holding the most
memory. Reading it walks every object once, so it is for diagnosis, not for scraping.
"""

from __future__ import annotations

import _tracemalloc  # the C half: is_tracing and get_traced_memory, without the module's imports
import collections
import ctypes
import gc
from pathlib import Path
from typing import Any

from mesh.heap import libc_function

TOP = 25


def resident_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and its parts (anonymous, file-backed) from /proc/PID/status, in kB."""
    wanted = {"VmRSS", "RssAnon", "RssFile", "VmHWM"}
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0])
    return out


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


_mallinfo = libc_function("mallinfo2")
if _mallinfo is not None:
    _mallinfo.restype = _MallInfo2


def heap_kb() -> dict[str, int] | None:
    """glibc's main view of the heap (mallinfo2), in kB: `in_use` by allocations, `free` but
    still held (fragments the trim cannot return), `mmapped` blocks; None without glibc."""
    if _mallinfo is None:
        return None
    info = _mallinfo()
    return {"in_use": info.uordblks // 1024, "free": info.fordblks // 1024, "mmapped": info.hblkhd // 1024}


def objects_by_type(limit: int = TOP) -> list[tuple[str, int]]:
    """The most numerous object types among those the garbage collector tracks."""
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    return counts.most_common(limit)


def traced_lines(limit: int = TOP) -> list[dict[str, Any]]:
    """The source lines holding the most memory (tracemalloc must be tracing)."""
    import tracemalloc  # here: it imports pickle and more, memory a proxy pays only when tracing

    stats = tracemalloc.take_snapshot().statistics("lineno")[:limit]
    return [{"where": str(s.traceback), "kb": round(s.size / 1024, 1), "blocks": s.count} for s in stats]


def memory_report() -> dict[str, Any]:
    """The whole report (see the module docstring)."""
    tracing = _tracemalloc.is_tracing()
    return {
        "resident_kb": resident_kb(),
        "heap_kb": heap_kb(),
        "gc_objects": dict(objects_by_type()),
        "traced": traced_lines() if tracing else "start with PYTHONTRACEMALLOC=1 to see lines",
        "traced_total_kb": _tracemalloc.get_traced_memory()[0] // 1024 if tracing else None,
    }
