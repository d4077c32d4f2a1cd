"""Periodic stream upkeep: trimming, stale consumers, lag metrics (DESIGN §3).

Pipeline position: run by the consumer's arq cron jobs next to the read loop. Trimming
only ever removes entries the group acked: XTRIM MINID at the oldest pending id, or just
past the group's last-delivered id when nothing is pending, so an unacked or undelivered
entry is never trimmed. A stale consumer is deleted only after its pending entries were
claimed and processed, so it neither loses work nor pins trimming.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, _entries
from storage.lag import lag_of
from storage.queue import GROUP, resolve

logger = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


async def group_info(redis: Redis, stream: str) -> dict[str, Any] | None:
    """XINFO GROUPS row of group ``writers`` (None if the stream or group is missing)."""
    try:
        groups = await resolve(redis.xinfo_groups(stream))
    except ResponseError:
        return None
    for row in groups:
        if _text(row["name"]) == GROUP:
            return dict(row)
    return None


async def trim_partition(redis: Redis, stream: str) -> int:
    """Trim the acked prefix of one stream; returns the number of entries removed."""
    info = await group_info(redis, stream)
    if info is None:
        return 0
    if int(info["pending"]) > 0:
        summary = await resolve(redis.xpending(stream, GROUP))
        min_id = _text(summary["min"])  # MINID keeps this entry and everything after it
    else:
        last = _text(info["last-delivered-id"])
        if last == "0-0":
            return 0
        min_id = _next_id(last)
    return int(await resolve(redis.xtrim(stream, minid=min_id, approximate=False)))


async def trim_all(reader: Reader) -> int:
    return sum([await trim_partition(reader.redis, s) for s in reader.layout.streams()], start=0)


async def record_lag(reader: Reader, metrics: ConsumerMetrics) -> None:
    """Per-partition lag (undelivered) and pending (unacked) gauges from XINFO GROUPS.

    The lag is checked against the stream (:func:`storage.lag.lag_of`): Redis' counter can
    be null or wrong after an AOF repair or an XSETID.
    """
    for partition, stream in enumerate(reader.layout.streams()):
        info = await group_info(reader.redis, stream)
        if info is None:
            continue
        lag = await lag_of(reader.redis, stream, info)
        metrics.lag.labels(str(partition)).set(float(lag))
        metrics.pending.labels(str(partition)).set(float(info["pending"]))


async def remove_stale_consumers(reader: Reader) -> list[str]:
    """Take over the entries of consumers idle past the limit, then delete them."""
    removed: list[str] = []
    me = reader.settings.consumer_name
    for partition, stream in enumerate(reader.layout.streams()):
        try:
            consumers = await resolve(reader.redis.xinfo_consumers(stream, GROUP))
        except ResponseError:
            continue
        for row in consumers:
            name = _text(row["name"])
            if name == me or int(row["idle"]) < reader.settings.stale_consumer_ms:
                continue
            if await _take_over(reader, partition, stream, name):
                await resolve(reader.redis.xgroup_delconsumer(stream, GROUP, name))
                logger.info("removed stale consumer %s from partition %s", name, partition)
                removed.append(name)
    return removed


async def _take_over(reader: Reader, partition: int, stream: str, name: str) -> bool:
    """Claim and process every entry pending at ``name``; True once none is left."""
    redis = reader.redis
    while True:
        rows = await resolve(
            redis.xpending_range(
                stream, GROUP, min="-", max="+", count=reader.settings.batch, consumername=name
            )
        )
        if not rows:
            return True
        ids: list[Any] = [_text(r["message_id"]) for r in rows]
        claimed = await resolve(redis.xclaim(stream, GROUP, reader.settings.consumer_name, 0, ids))
        entries = _entries(claimed)
        if len(entries) < len(ids):
            # ids whose entries were deleted stay in the PEL after XCLAIM: ack them away
            gone = set(ids) - {i for i, _ in entries}
            await resolve(redis.xack(stream, GROUP, *gone))
        if entries:
            await reader.process_claimed(partition, entries)
