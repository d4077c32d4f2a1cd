"""Periodic stream upkeep: trimming, stale consumers, lag metrics (docs/operations.md).

Pipeline position: run by the consumer's arq cron jobs next to the read loop. Trimming
only ever removes entries every group of the stream acked (``writers`` and the Spider
forwarder's): XTRIM MINID at the oldest id any group still needs, its oldest pending id or
just past its last-delivered id, so an unacked or undelivered entry is never trimmed. A
stale consumer is deleted only after its pending entries were claimed and processed, so it
neither loses work nor pins trimming.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, _entries
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


async def _keep_from(redis: Redis, stream: str, row: dict[Any, Any]) -> str | None:
    """The oldest id one group still needs: its oldest pending entry, else the one after
    its last-delivered id; None when it needs the whole stream (nothing delivered yet)."""
    name = _text(row["name"])
    if int(row["pending"]) > 0:
        summary = await resolve(redis.xpending(stream, name))
        return _text(summary["min"])
    last = _text(row["last-delivered-id"])
    return None if last == "0-0" else _next_id(last)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _abandoned(row: dict[Any, Any], abandon_after: int | None) -> bool:
    """A group other than ``writers`` this far behind is one nobody reads any more: a
    running Spider forwarder keeps its own backlog below LEVIATHAN_SPIDER_MAX_BACKLOG."""
    if abandon_after is None or _text(row["name"]) == GROUP or row.get("lag") is None:
        return False
    return int(row["pending"]) + int(row["lag"]) > abandon_after


async def trim_partition(redis: Redis, stream: str, abandon_after: int | None = None) -> int:
    """Trim the prefix every group of the stream has acked (the writers and the Spider
    forwarder alike); returns the number of entries removed.

    A group other than ``writers`` more than ``abandon_after`` entries behind is left out,
    so a forwarder switched off without removing its group cannot grow Redis for ever.
    """
    try:
        groups = await resolve(redis.xinfo_groups(stream))
    except ResponseError:  # no such stream
        return 0
    keep: list[str] = []
    for row in groups:
        if _abandoned(dict(row), abandon_after):
            continue
        min_id = await _keep_from(redis, stream, dict(row))
        if min_id is None:
            return 0
        keep.append(min_id)
    if not keep:
        return 0
    # MINID keeps this entry and everything after it
    min_id = min(keep, key=_id_key)
    return int(await resolve(redis.xtrim(stream, minid=min_id, approximate=False)))


async def trim_all(reader: Reader) -> int:
    # twice the forwarder's bound: a live forwarder skips down to the bound on every retry
    cap = 2 * reader.settings.spider_max_backlog
    return sum(
        [await trim_partition(reader.redis, s, cap) for s in reader.layout.streams()], start=0
    )


async def record_lag(reader: Reader, metrics: ConsumerMetrics) -> None:
    """Per-partition lag (undelivered) and pending (unacked) gauges from XINFO GROUPS."""
    for partition, stream in enumerate(reader.layout.streams()):
        info = await group_info(reader.redis, stream)
        if info is None:
            continue
        lag = info.get("lag")
        metrics.lag.labels(str(partition)).set(float(lag) if lag is not None else 0.0)
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
