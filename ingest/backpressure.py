"""Cached queue lag for backpressure (DESIGN §3).

Pipeline position: checked by the ingest handler before queueing a bundle. The total lag
of group ``writers`` over all partitions (XINFO GROUPS ``lag``; XLEN while the group does
not exist yet) is measured at most once per ``ttl`` seconds; concurrent requests share
one in-flight measurement instead of each calling Redis, and a slightly stale value is
served while it is refreshed in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from storage.queue import GROUP, StreamLayout, resolve

log = logging.getLogger(__name__)
STALE_FACTOR = 5


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("queue lag measurement failed: %s", type(task.exception()).__name__)


async def measure_lag(redis: Redis, layout: StreamLayout) -> int:
    """Entries not yet delivered to the writers group, summed over partitions."""
    lags = await asyncio.gather(*(_stream_lag(redis, s) for s in layout.streams()))
    return sum(lags)


async def _stream_lag(redis: Redis, stream: str) -> int:
    try:
        groups = await resolve(redis.xinfo_groups(stream))
    except ResponseError:  # stream does not exist yet
        return 0
    group = next((g for g in groups if _name(g) == GROUP), None)
    lag = None if group is None else group.get("lag")
    return int(lag) if lag is not None else int(await resolve(redis.xlen(stream)))


def _name(group: dict[str, object]) -> str:
    name = group.get("name")
    return name.decode() if isinstance(name, bytes) else str(name)


class LagGauge:
    """Shared, cached lag; ``on_value`` exports each fresh measurement."""

    def __init__(
        self,
        redis: Redis,
        layout: StreamLayout,
        ttl: float,
        on_value: Callable[[int], None] | None = None,
    ) -> None:
        self._redis = redis
        self._layout = layout
        self._ttl = ttl
        self._on_value = on_value
        self._value = 0
        self._stamp = float("-inf")
        self._inflight: asyncio.Task[int] | None = None

    def cached(self) -> int | None:
        """The last measurement while usable, else ``None`` (no I/O).

        Fresh (younger than ``ttl``): returned as is. Stale but younger than
        ``STALE_FACTOR * ttl``: returned while one background refresh runs, so requests
        never queue behind the periodic measurement.
        """
        age = time.monotonic() - self._stamp
        if age < self._ttl:
            return self._value
        if age < self._ttl * STALE_FACTOR:
            self._start_refresh()
            return self._value
        return None

    def _start_refresh(self) -> asyncio.Task[int]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._refresh())
            self._inflight.add_done_callback(_log_failure)
        return self._inflight

    async def lag(self) -> int:
        cached = self.cached()
        if cached is not None:
            return cached
        return await asyncio.shield(self._start_refresh())

    async def _refresh(self) -> int:
        value = await measure_lag(self._redis, self._layout)
        self._value, self._stamp = value, time.monotonic()
        if self._on_value is not None:
            self._on_value(value)
        return value
