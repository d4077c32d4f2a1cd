"""Periodic stream upkeep: trimming, stale consumers, lag metrics.

Pipeline position: run by the consumer's arq cron jobs next to the read loop, in every
replica at once, so each step is safe against the others and against the read loops:

- Trimming only removes entries that EVERY consumer group of the stream is done with (the
  ``writers`` group and any other, e.g. a forwarding group): XTRIM MINID at the minimum,
  over all groups, of each group's oldest pending id, or of the id just past its
  last-delivered id when it has nothing pending. An entry pending or undelivered in any
  group is never trimmed — except that a group other than ``writers`` more than twice
  ``LEVIATHAN_SPIDER_MAX_BACKLOG`` behind, none of whose consumers was seen (XINFO
  CONSUMERS ``idle``) for ``LEVIATHAN_SPIDER_ABANDON_AFTER_S``, is left out: a running
  Spider forwarder keeps its own backlog below that bound, so such a group is one nobody
  reads any more (a forwarder switched off without ``forward --remove-group``), and it
  must not grow Redis for ever. A forwarder merely down for a deploy, or restarting in a
  crash loop, was seen recently and keeps its entries; one that comes back after its
  group was left out counts and logs what was trimmed from under it (consumer.forwarder).
- A stale consumer (idle past ``LEVIATHAN_CONSUMER_STALE_MS``) is deleted only once its
  pending entries were claimed by this one, so it neither loses work nor pins trimming.
- A step whose stream, group or consumer vanished meanwhile (another replica got there
  first) logs one line and moves on; it never fails the job.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, _entries
from storage.lag import lag_of
from storage.queue import GROUP, id_key, resolve
from storage.redisconn import is_missing

logger = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


async def groups(redis: Redis, stream: str) -> list[dict[str, Any]]:
    """XINFO GROUPS rows of ``stream`` (empty if the stream does not exist)."""
    try:
        rows = await resolve(redis.xinfo_groups(stream))
    except ResponseError as exc:
        if is_missing(exc):
            return []
        raise
    return [{_text(k): v for k, v in dict(row).items()} for row in rows]


async def group_info(redis: Redis, stream: str) -> dict[str, Any] | None:
    """XINFO GROUPS row of group ``writers`` (None if the stream or group is missing)."""
    for row in await groups(redis, stream):
        if _text(row["name"]) == GROUP:
            return row
    return None


async def _keep_from(redis: Redis, stream: str, row: dict[str, Any]) -> str:
    """The first id the group of XINFO row ``row`` may still need.

    Its oldest pending id, or the id just past its last-delivered id when nothing is
    pending. XINFO is read before XPENDING: entries only move forward (undelivered →
    pending → acked), so an oldest pending id read later, or the id past a last-delivered
    id read earlier, never lies beyond an entry the group still needs.
    """
    past_last = _next_id(_text(row["last-delivered-id"]))
    if int(row["pending"]) == 0:
        return past_last
    summary = await resolve(redis.xpending(stream, _text(row["name"])))
    if not summary or not int(summary.get("pending") or 0) or not summary.get("min"):
        return past_last  # acked between the two reads: nothing pending any more
    return _text(summary["min"])


def _behind(row: dict[str, Any], abandon_after: int | None) -> bool:
    """A group other than ``writers`` more than ``abandon_after`` entries behind."""
    if abandon_after is None or _text(row["name"]) == GROUP or row.get("lag") is None:
        return False
    return int(row["pending"]) + int(row["lag"]) > abandon_after


async def last_seen_ms(redis: Redis, stream: str, group: str) -> int | None:
    """Milliseconds since any consumer of ``group`` last read or claimed (XINFO CONSUMERS
    ``idle``), None when the group has no consumer."""
    rows = await resolve(redis.xinfo_consumers(stream, group))
    idle = [int(row["idle"]) for row in rows]
    return min(idle) if idle else None


async def _abandoned(
    redis: Redis, stream: str, row: dict[str, Any], abandon_after: int | None, seen_ms: int
) -> bool:
    """Behind by more than ``abandon_after`` and no consumer seen within ``seen_ms``."""
    if not _behind(row, abandon_after):
        return False
    name = _text(row["name"])
    behind = int(row["pending"]) + int(row["lag"])
    seen = await last_seen_ms(redis, stream, name)
    if seen is not None and seen < seen_ms:
        logger.warning(
            "group %s of %s is %d entries behind (more than %s) but its consumer was seen "
            "%.0fs ago: its entries are kept",
            name,
            stream,
            behind,
            abandon_after,
            seen / 1000,
        )
        return False
    logger.warning(
        "group %s of %s is %d entries behind and no consumer of it was seen for %s: left out "
        "of trimming (a forwarder coming back counts what was trimmed as skipped)",
        name,
        stream,
        behind,
        "ever" if seen is None else f"{seen / 1000:.0f}s",
    )
    return True


async def trim_partition(
    redis: Redis, stream: str, abandon_after: int | None = None, seen_ms: int = 0
) -> int:
    """Trim the prefix every group is done with; returns the number of entries removed.

    A group other than ``writers`` more than ``abandon_after`` entries behind is left out,
    unless one of its consumers was seen within the last ``seen_ms`` milliseconds.
    """
    try:
        rows = [
            r
            for r in await groups(redis, stream)
            if not await _abandoned(redis, stream, r, abandon_after, seen_ms)
        ]
        if not rows:
            return 0
        min_id = min([await _keep_from(redis, stream, row) for row in rows], key=id_key)
        if min_id == "0-1":
            return 0  # some group has read nothing yet
        return int(await resolve(redis.xtrim(stream, minid=min_id, approximate=False)))
    except ResponseError as exc:
        # the stream or a group was deleted meanwhile (NOGROUP, no such key): next run
        logger.warning("trim of %s skipped: %s", stream, exc)
        return 0


async def trim_all(reader: Reader) -> int:
    # twice the forwarder's bound: a live forwarder skips down to the bound on every retry
    cap = 2 * reader.settings.spider_max_backlog
    seen_ms = int(reader.settings.spider_abandon_after_s * 1000)
    return sum(
        [await trim_partition(reader.redis, s, cap, seen_ms) for s in reader.layout.streams()],
        start=0,
    )


async def record_lag(reader: Reader, metrics: ConsumerMetrics) -> None:
    """Per-partition lag (undelivered) and pending (unacked) gauges from XINFO GROUPS,
    and the progress gauges (logging a partition that became stalled).

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
    stalled = set(metrics.update_progress(reader.states, reader.settings.stall_s))
    for state in reader.states:
        if state.partition in stalled and not state.stall_reported:
            logger.warning(
                "partition %s stalled: %d entries held with no commit for %.0fs or more (%s)",
                state.partition,
                len(state.held),
                reader.settings.stall_s,
                reader.storage_problem or "no storage or Redis failure seen",
            )
        state.stall_reported = state.partition in stalled


async def remove_stale_consumers(reader: Reader) -> list[str]:
    """Take over the entries of consumers idle past the limit, then delete them."""
    removed: list[str] = []
    me = reader.settings.consumer_name
    for partition, stream in enumerate(reader.layout.streams()):
        try:
            consumers = await resolve(reader.redis.xinfo_consumers(stream, GROUP))
        except ResponseError as exc:
            if is_missing(exc):
                continue
            raise
        for row in consumers:
            name = _text(row["name"])
            if name == me or int(row["idle"]) < reader.settings.stale_consumer_ms:
                continue
            try:
                if await _take_over(reader, partition, stream, name):
                    await resolve(reader.redis.xgroup_delconsumer(stream, GROUP, name))
                    logger.info("removed stale consumer %s from partition %s", name, partition)
                    removed.append(name)
            except ResponseError as exc:
                logger.warning("stale consumer %s of %s left for now: %s", name, stream, exc)
    return removed


async def _take_over(reader: Reader, partition: int, stream: str, name: str) -> bool:
    """Claim every entry pending at ``name`` and hand it to our partition task; True once
    none is left at ``name``.

    The claim uses the claim idle as its minimum idle time: if another replica took the
    entries first (resetting their idle time), nothing is claimed twice.
    """
    redis = reader.redis
    rows = await resolve(
        redis.xpending_range(
            stream, GROUP, min="-", max="+", count=reader.settings.batch, consumername=name
        )
    )
    if not rows:
        return True
    ids: list[Any] = [_text(r["message_id"]) for r in rows]
    me, idle = reader.settings.consumer_name, reader.settings.claim_idle_ms
    claimed = await resolve(redis.xclaim(stream, GROUP, me, idle, ids))
    entries = _entries(claimed)
    gone = [_text(i) for i, fields in claimed if fields is None]
    if gone:
        # Redis before 7 leaves ids of deleted entries in the PEL: nothing left to process
        await resolve(redis.xack(stream, GROUP, *gone))
    await reader.adopt(partition, entries)
    left = await resolve(
        redis.xpending_range(stream, GROUP, min="-", max="+", count=1, consumername=name)
    )
    return not left
