"""Cached queue lag for backpressure (DESIGN §3).

Pipeline position: checked by the ingest handler before queueing a bundle. The total lag
of group ``writers`` over all partitions (XINFO GROUPS ``lag``; XLEN while the group does
not exist yet) is measured at most once per ``ttl`` seconds; concurrent requests share
one in-flight measurement instead of each calling Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from storage.queue import GROUP, StreamLayout, resolve


async def measure_lag(redis: Redis, layout: StreamLayout) -> int:
    """Entries not yet delivered to the writers group, summed over partitions."""
    total = 0
    for stream in layout.streams():
        try:
            groups = await resolve(redis.xinfo_groups(stream))
        except ResponseError:  # stream does not exist yet
            continue
        group = next((g for g in groups if _name(g) == GROUP), None)
        lag = None if group is None else group.get("lag")
        total += int(lag) if lag is not None else int(await resolve(redis.xlen(stream)))
    return total


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
        """The last measurement while it is fresh, else ``None`` (no I/O)."""
        return self._value if time.monotonic() - self._stamp < self._ttl else None

    async def lag(self) -> int:
        cached = self.cached()
        if cached is not None:
            return cached
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._refresh())
        return await asyncio.shield(self._inflight)

    async def _refresh(self) -> int:
        value = await measure_lag(self._redis, self._layout)
        self._value, self._stamp = value, time.monotonic()
        if self._on_value is not None:
            self._on_value(value)
        return value
