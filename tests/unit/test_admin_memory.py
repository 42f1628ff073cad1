"""`/debug/memory` on a proxy's admin port: resident set, live objects by type, traced lines."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

from mesh.admin_http import admin_routes, serve


async def _get(port: int, path: str) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


class _MemoryReportMarker:
    """A type only this test makes, so its count in the report is known."""


async def test_the_memory_report_counts_live_objects_and_traces_when_asked() -> None:
    server = await serve("127.0.0.1", 0, admin_routes("ztunnel", dict, lambda: None))
    port = server.sockets[0].getsockname()[1]
    markers = [_MemoryReportMarker() for _ in range(50_000)]  # enough to be among the top types
    try:
        status, report = await _get(port, "/debug/memory")
        assert status == 200 and report["resident_kb"]["VmRSS"] > 1000
        assert report["gc_objects"]["_MemoryReportMarker"] == 50_000 and isinstance(report["traced"], str)
        if report["heap_kb"] is not None:  # glibc: the 50 000 objects are in use on the heap
            held = [bytearray(1000) for _ in range(4000)]  # 4 MB more, from malloc (over 512 bytes)
            _, with_more = await _get(port, "/debug/memory")
            assert with_more["heap_kb"]["in_use"] - report["heap_kb"]["in_use"] > 3000
            del held
        tracemalloc.start()
        try:
            blob = [bytearray(1 << 20) for _ in range(4)]  # 4 MiB from this line
            _, report = await _get(port, "/debug/memory")
        finally:
            tracemalloc.stop()
        top = report["traced"][0]
        assert "test_admin_memory.py" in top["where"] and top["kb"] >= 4096, top
        del blob
    finally:
        server.close()
        del markers
