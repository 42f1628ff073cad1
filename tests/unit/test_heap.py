"""mesh/heap.py: freed heap memory goes back to the OS."""

from __future__ import annotations

import pytest

from mesh import heap
from mesh.memory_report import resident_kb


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
