"""Keep the entries a live consumer works on from being claimed by anyone.

Pipeline position: a task of the consumer process beside the partition tasks. XAUTOCLAIM
(consumer.reclaim) takes entries idle longer than ``LEVIATHAN_CONSUMER_CLAIM_IDLE_MS``;
without this, a batch retried through a long storage outage (or a slow write) would be
claimed by another replica, or by this process's own reclaim job, and its Redis delivery
count would climb until ``max_deliveries`` dead-lettered healthy entries. So every
:attr:`ConsumerSettings.keepalive_s` the entries each partition has held for that long are
``XCLAIM … JUSTID``-ed to ourselves: that resets their idle time without counting a
delivery. XAUTOCLAIM then only ever takes entries of consumers that stopped, and the
delivery count means how often an entry went to a process that died with it.

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
from storage.queue import GROUP, StreamLayout, resolve

logger = logging.getLogger(__name__)


async def refresh(redis: Redis, layout: StreamLayout, consumer: str, state: PartitionState) -> int:
    """Reset the idle time of everything ``state`` holds; returns the ids refreshed."""
    ids = list(state.held)
    if not ids:
        return 0
    state.held_since = time.monotonic()
    claimed = await resolve(
        redis.xclaim(layout.stream(state.partition), GROUP, consumer, 0, ids, justid=True)  # type: ignore[arg-type]
    )
    return len(claimed)


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
