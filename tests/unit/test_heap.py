"""mesh/heap.py: freed heap memory goes back to the OS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mesh import heap
from mesh.memory_report import resident_kb

ROOT = Path(__file__).resolve().parents[2]


def _rss_kb() -> int:
    return resident_kb()["VmRSS"]


@pytest.mark.skipif(heap._malloc_trim is None, reason="no glibc malloc_trim here")
def test_trim_returns_freed_fragmented_heap_pages() -> None:
    # Many mid-sized blocks (below glibc's mmap threshold, so they live in the heap), every other
    # one freed: the holes are free but stay resident until trimmed.
    blocks = [bytearray(64 * 1024) for _ in range(400)]
    for b in blocks:
        b[::4096] = b"\x01" * len(b[::4096])  # touch every page
    del blocks[::2]
    before = _rss_kb()
    assert heap.trim()
    assert before - _rss_kb() > 5 * 1024  # most of the ~12.5 MB of holes went back
    del blocks


_KEEP_PROBE = """
import sys
from mesh import heap
from mesh.memory_report import resident_kb
if sys.argv[1] == "keep":
    assert heap.keep_freed_memory()
blocks = [bytearray(1 << 20) for _ in range(32)]  # 32 MiB of 1 MiB blocks, every page touched
for b in blocks:
    b[::4096] = b"\\x01" * len(b[::4096])
loaded = resident_kb()["VmRSS"]
del blocks, b
freed = resident_kb()["VmRSS"]
heap.trim()
print(loaded - freed, loaded - resident_kb()["VmRSS"])
"""


@pytest.mark.skipif(heap._mallopt is None or heap._malloc_trim is None, reason="no glibc mallopt here")
def test_freed_blocks_stay_for_reuse_until_the_periodic_trim() -> None:
    """Freed frame-sized blocks stay in the heap (reused by the next frames, no mmap and page
    faults per frame) and the periodic trim gives them back; glibc's default unmaps at once."""

    def run(mode: str) -> tuple[int, int]:
        out = subprocess.run(
            [sys.executable, "-c", _KEEP_PROBE, mode], cwd=ROOT, check=True, capture_output=True, text=True
        )
        returned_on_free, returned_after_trim = map(int, out.stdout.split())
        return returned_on_free, returned_after_trim

    default_on_free, _ = run("default")
    kept_on_free, kept_after_trim = run("keep")
    assert default_on_free > 24 * 1024  # glibc's default: 1 MiB blocks are mmapped, unmapped on free
    assert kept_on_free < 4 * 1024  # kept: nothing went back when the blocks were freed...
    assert kept_after_trim > 24 * 1024  # ...until the trim
