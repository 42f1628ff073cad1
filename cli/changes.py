"""`meshctl changes`: the newest entries of the change stream, or follow it."""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis

from mesh.changes import STREAM, ChangeEvent, Consumer, GapError, revision_of

HEADER = f"{'REVISION':>9}  {'OP':<9} {'KIND':<45} {'NAMESPACE':<16} NAME"


def row(e: ChangeEvent) -> str:
    return f"{e.revision:>9}  {e.op:<9} {e.kind:<45} {e.namespace or '-':<16} {e.name}"


async def show(redis_url: str, count: int, follow: bool, stream: str = STREAM) -> None:
    redis = Redis.from_url(redis_url)
    try:
        entries = await redis.xrevrange(stream, count=count)
        events = [ChangeEvent.from_fields(fields) for _id, fields in reversed(entries)]
        print(HEADER)
        for e in events:
            print(row(e))
        if not follow:
            return
        last = revision_of(entries[0][0]) if entries else 0
        consumer = Consumer(redis, last, stream=stream)
        while True:
            try:
                for e in await consumer.read():
                    print(row(e), flush=True)
            except GapError as gap:
                print(f"-- {gap}; continuing from revision {gap.found}", flush=True)
                consumer.revision = max(gap.found - 1, 0)
    finally:
        await redis.aclose()


def run(redis_url: str, count: int, follow: bool, stream: str = STREAM) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(show(redis_url, count, follow, stream))
