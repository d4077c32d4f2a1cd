"""Keep the entries a live consumer works on from being claimed by anyone.

Pipeline position: a task of the consumer process beside the partition tasks. XAUTOCLAIM
(consumer.reclaim) takes entries idle longer than ``LEVIATHAN_CONSUMER_CLAIM_IDLE_MS``;
without this, a batch retried through a long storage outage (or a slow write) would be
claimed by another replica, or by this process's own reclaim job, and its Redis delivery
count would climb. So every :attr:`ConsumerSettings.keepalive_s` the entries each
partition has held for that long are ``XCLAIM … JUSTID``-ed to ourselves: that resets
their idle time without counting a delivery.

Ownership first: an entry is refreshed only while it is still ours. XPENDING tells, per
held id, its owner and idle time; the XCLAIM then carries the smallest idle time seen
among ours as its MIN-IDLE-TIME, so an entry another consumer claimed in between (which
resets its idle time to zero) is not taken back either. Ids that are no longer ours
(claimed by a consumer after we stalled past the claim idle, or acked and trimmed) are
dropped from our holdings, never stolen back.

Batches that finish within one interval (all of them on the happy path) cost nothing here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from consumer.progress import PartitionState
from storage.queue import GROUP, StreamLayout, id_key, resolve

logger = logging.getLogger(__name__)


async def refresh(redis: Redis, layout: StreamLayout, consumer: str, state: PartitionState) -> int:
    """Reset the idle time of the held entries that are still ours; forget the others.

    Returns the number of ids refreshed."""
    ids = sorted(state.held, key=id_key)
    if not ids:
        return 0
    state.held_since = time.monotonic()
    stream = layout.stream(state.partition)
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in ids:  # one key: the partition's slot, on a cluster too
            pipe.xpending_range(stream, GROUP, min=entry_id, max=entry_id, count=1)
        replies = await pipe.execute()
    ours: list[str] = []
    idle: list[int] = []
    for entry_id, rows in zip(ids, replies, strict=True):
        row = rows[0] if rows else None
        if row is not None and _text(row["consumer"]) == consumer:
            ours.append(entry_id)
            idle.append(int(row["time_since_delivered"]))
    gone = [i for i in ids if i not in set(ours)]
    if gone:
        state.drop(gone)
        logger.warning(
            "partition %s: %d held entries are no longer ours (claimed by another consumer "
            "or finished); not refreshed",
            state.partition,
            len(gone),
        )
    if not ours:
        return 0
    claimed = await resolve(
        redis.xclaim(stream, GROUP, consumer, min(idle), ours, justid=True)  # type: ignore[arg-type]
    )
    lost = set(ours) - {_text(i) for i in claimed}
    if lost:  # claimed by another consumer between our XPENDING and XCLAIM
        state.drop(lost)
    return len(claimed)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def run(
    redis: Redis,
    layout: StreamLayout,
    consumer: str,
    states: Sequence[PartitionState],
    interval: float,
    stopped: asyncio.Event,
) -> None:
    """Refresh due holdings every ``interval / 2`` seconds until ``stopped`` is set.

    Held entries are refreshed once they are ``interval`` old, so none gets older than
    about one and a half intervals (three eighths of the claim idle) while we live.
    """
    tick = interval / 2
    while not stopped.is_set():
        now = time.monotonic()
        for state in states:
            if not state.stale_for(now, interval):
                continue
            try:
                await refresh(redis, layout, consumer, state)
            except (RedisError, OSError) as exc:
                # Redis is away: nobody can claim meanwhile either; retry next tick
                logger.warning(
                    "keep-alive of partition %s failed: %s", state.partition, type(exc).__name__
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), tick)
