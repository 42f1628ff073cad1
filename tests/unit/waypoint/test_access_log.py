"""The batched access log: lines keep the shape of every other log line, go out together after
the interval (or at once past the size limit), and not at all when the logger is off."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from dataplane.waypoint.access_log import LOGGER, AccessLog


def test_lines_are_batched_until_the_interval() -> None:
    sink = io.StringIO()
    log = AccessLog(sink, interval=0.05)

    async def scenario() -> tuple[str, str]:
        log.write({"status": 200, "path": "/a"})
        log.write({"status": 403, "local_reply": "RBAC: access denied"})
        before = sink.getvalue()
        await asyncio.sleep(0.15)
        return before, sink.getvalue()

    before, after = asyncio.run(scenario())
    assert before == ""
    lines = [json.loads(x) for x in after.splitlines()]
    assert [(x["logger"], x["level"], x["msg"], x["status"]) for x in lines] == [
        (LOGGER, "info", "request", 200),
        (LOGGER, "info", "request", 403),
    ]
    assert lines[0]["ts"].endswith("Z") and len(lines[0]["ts"]) == len("2026-01-01T00:00:00.000Z")


def test_the_size_limit_and_flush_write_at_once() -> None:
    sink = io.StringIO()
    log = AccessLog(sink, interval=60, limit=200)

    async def scenario() -> tuple[str, str]:
        log.write({"path": "/" + "a" * 300})  # past the limit: written at once
        big = sink.getvalue()
        log.write({"path": "/small"})  # queued for a minute...
        assert sink.getvalue() == big
        log.flush()  # ...unless flushed (drain, exit)
        return big, sink.getvalue()

    big, flushed = asyncio.run(scenario())
    assert big.count("\n") == 1 and flushed.endswith('"path":"/small"}\n')


def test_enabled_follows_the_logger_level() -> None:
    logger = logging.getLogger(LOGGER)
    level = logger.level
    try:
        logger.setLevel(logging.WARNING)
        assert not AccessLog(io.StringIO()).enabled
        logger.setLevel(logging.INFO)
        assert AccessLog(io.StringIO()).enabled
    finally:
        logger.setLevel(level)
