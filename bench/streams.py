"""Pre-filled consumer streams: the bundles and the backlog probe the drain benchmarks share.

Pipeline position: stands in for the ingest tier. :mod:`bench.consumer` (drain rate),
:mod:`bench.consumer_e2e` (latency through the real processes) and :mod:`bench.forwarder`
all feed the same 20-event attempt bundles into a consumer group and wait for its backlog
to reach zero; this module holds that part so none of them imports another.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from storage.envelope import encode
from storage.queue import GROUP, StreamLayout
from storage.redisconn import is_missing
from storage.schema import Bundle

EVENTS_PER_BUNDLE = 20


def bundle(n: int, run: str) -> Bundle:
    """An attempt's 20 events: task/attempt lifecycle around a burst of file discoveries."""
    attempt, task = f"att-{run}-{n}", f"task-{run}-{n}"
    kinds = ["task.created", "attempt.created", "attempt.started"]
    kinds += ["file.discovered"] * (EVENTS_PER_BUNDLE - 4) + ["attempt.succeeded"]
    events: list[dict[str, Any]] = [
        {
            "event_id": f"{attempt}-{i}",
            "event_type": kind,
            "timestamp": f"2026-11-28T09:{i // 60:02d}:{i % 60:02d}Z",
            "actor_id": f"worker-{n % 16}",
            "payload": {"task_id": task, "attempt_id": attempt, "path": f"src/m{i}.py"},
        }
        for i, kind in enumerate(kinds)
    ]
    return Bundle.model_validate(
        {"target": "bench", "bundle_id": f"bundle-{attempt}", "events": events}
    )


async def prefill(redis: Redis, layout: StreamLayout, count: int, run: str) -> None:
    """``count`` bundles XADDed through the envelope encoder, pipelined as ingest does."""
    for stream in layout.streams():
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for start in range(0, count, 500):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + 500)):
                b = bundle(n, run)
                pipe.xadd(layout.stream(layout.partition_of(b.bundle_id)), encode(b, "bench"))  # type: ignore[arg-type]
            await pipe.execute()


async def backlog(redis: Redis, layout: StreamLayout) -> int:
    """Entries the group has not acked yet: pending plus never delivered, all partitions."""
    total = 0
    for stream in layout.streams():
        try:
            rows = await redis.xinfo_groups(stream)
        except ResponseError as exc:
            if not is_missing(exc):
                raise
            continue  # a partition no bundle was routed to has no stream yet: nothing there
        for row in rows:
            total += int(row["pending"]) + int(row.get("lag") or 0)
    return total
