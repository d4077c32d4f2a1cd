"""Cached queue state for backpressure: lag and Redis memory (docs/operations.md).

Pipeline position: checked by the ingest handler before queueing a bundle. Two marks:
the total lag of group ``writers`` over all partitions (:func:`storage.lag.stream_lag`,
which does not trust an inconsistent XINFO counter), and Redis' ``used_memory`` against
``LEVIATHAN_QUEUE_HIGH_WATER_BYTES`` (at most :data:`MAXMEMORY_SHARE` of Redis'
``maxmemory``), so a backlog of large bundles is refused before Redis refuses writes.
Measured at most once per ``ttl`` seconds; concurrent requests share one in-flight
measurement instead of each calling Redis, and a slightly stale value is served while it
is refreshed in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from storage.lag import stream_lag
from storage.queue import StreamLayout, resolve
from storage.redisconn import as_cluster

log = logging.getLogger(__name__)
STALE_FACTOR = 5
MAXMEMORY_SHARE = 0.8  # room left for what is already on its way when the mark is passed
DEFAULT_HIGH_WATER_BYTES = 512 * 1024 * 1024  # LEVIATHAN_QUEUE_HIGH_WATER_BYTES' default


@dataclass(frozen=True, slots=True)
class QueueState:
    """One measurement: writers-group lag over all partitions and Redis' memory."""

    lag: int = 0
    used_memory: int = 0
    maxmemory: int = 0

    def memory_mark(self, high_water_bytes: int) -> int:
        """The memory mark in force: the setting, or less when Redis' maxmemory is lower."""
        if self.maxmemory > 0:
            return min(high_water_bytes, int(self.maxmemory * MAXMEMORY_SHARE))
        return high_water_bytes


def _log_failure(task: asyncio.Task[QueueState]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("queue state measurement failed: %s", type(task.exception()).__name__)


async def measure_lag(redis: Redis, layout: StreamLayout) -> int:
    """Entries not yet delivered to the writers group, summed over partitions."""
    lags = await asyncio.gather(*(stream_lag(redis, s) for s in layout.streams()))
    return sum(lags)


async def _node_memory(redis: Redis) -> dict[str, Any]:
    try:
        return dict(await resolve(redis.info("memory")))
    except ResponseError as exc:  # a managed Redis may refuse INFO: the lag mark still applies
        log.debug("INFO memory refused: %s", exc)
        return {}


def _state(lag: int, info: dict[str, Any]) -> QueueState:
    return QueueState(lag, int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))


async def _memory(redis: Redis, high_water_bytes: int) -> dict[str, Any]:
    """``INFO memory`` of the node, or on a cluster of the master closest to (or furthest
    past) its mark: each master holds its own partitions' entries, and the first one full
    refuses their writes."""
    cluster = as_cluster(redis)
    if cluster is None:
        return await _node_memory(redis)
    infos = await asyncio.gather(*(_node_memory(m) for m in await cluster.masters()))

    def headroom(info: dict[str, Any]) -> int:
        state = _state(0, info)
        return state.memory_mark(high_water_bytes) - state.used_memory

    return min(infos, key=headroom, default={})


async def measure(
    redis: Redis, layout: StreamLayout, high_water_bytes: int = DEFAULT_HIGH_WATER_BYTES
) -> QueueState:
    """Lag and ``INFO memory`` (``used_memory``, ``maxmemory``) in one measurement; on a
    cluster the memory of the master with the least room below ``high_water_bytes``."""
    lag, info = await asyncio.gather(measure_lag(redis, layout), _memory(redis, high_water_bytes))
    return _state(lag, info)


class LagGauge:
    """Shared, cached queue state; ``on_value`` exports each fresh measurement."""

    def __init__(
        self,
        redis: Redis,
        layout: StreamLayout,
        ttl: float,
        on_value: Callable[[QueueState], None] | None = None,
        high_water_bytes: int = DEFAULT_HIGH_WATER_BYTES,
    ) -> None:
        self._redis = redis
        self._high_water_bytes = high_water_bytes
        self._layout = layout
        self._ttl = ttl
        self._on_value = on_value
        self._value = QueueState()
        self._stamp = float("-inf")
        self._inflight: asyncio.Task[QueueState] | None = None

    def cached(self) -> QueueState | None:
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

    def _start_refresh(self) -> asyncio.Task[QueueState]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._refresh())
            self._inflight.add_done_callback(_log_failure)
        return self._inflight

    async def lag(self) -> QueueState:
        cached = self.cached()
        if cached is not None:
            return cached
        return await asyncio.shield(self._start_refresh())

    async def _refresh(self) -> QueueState:
        value = await measure(self._redis, self._layout, self._high_water_bytes)
        self._value, self._stamp = value, time.monotonic()
        if self._on_value is not None:
            self._on_value(value)
        return value
