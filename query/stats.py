"""GET /v1/stats: per-partition queue figures read from Redis.

Pipeline position: reads the streams the publisher writes and the consumers drain. Each
partition's stream is queried with its own commands (XLEN, XINFO GROUPS, XINFO CONSUMERS)
because a Redis Cluster rejects commands spanning keys of several partitions.
``dead_letters`` counts the entries of every partition's dead stream plus those left in
the single dead stream of earlier releases (docs/operations.md, "Dead letters").
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from query.deps import DEPS_KEY
from storage.lag import lag_of
from storage.queue import GROUP, StreamLayout, resolve
from storage.redisconn import is_missing
from webcore.errors import Unavailable
from webcore.responses import ConsumerStats, PartitionStats, Stats

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(info: dict[Any, Any], name: str) -> Any:
    return info.get(name, info.get(name.encode()))


async def _partition(redis: Redis, layout: StreamLayout, partition: int) -> PartitionStats:
    key = layout.stream(partition)
    length = int(await resolve(redis.xlen(key)))
    lag: int | None = length
    pending = 0
    consumers: list[ConsumerStats] = []
    try:
        groups = await resolve(redis.xinfo_groups(key))
    except ResponseError as exc:
        if not is_missing(exc):
            raise
        groups = []  # stream does not exist yet
    for group in groups:
        if _text(_field(group, "name")) != GROUP:
            continue
        # Redis' own lag counter can be null or wrong (after trimming, an AOF repair):
        # the same checked reading backpressure uses
        lag = await lag_of(redis, key, dict(group))
        pending = int(_field(group, "pending") or 0)
        for c in await resolve(redis.xinfo_consumers(key, GROUP)):
            consumers.append(
                ConsumerStats(
                    name=_text(_field(c, "name")),
                    pending=int(_field(c, "pending") or 0),
                    idle_ms=int(_field(c, "idle") or 0),
                )
            )
    return PartitionStats(
        partition=partition,
        stream=key,
        length=length,
        lag=lag,
        pending=pending,
        consumers=sorted(consumers, key=lambda c: c.name),
    )


async def collect(redis: Redis, layout: StreamLayout) -> Stats:
    parts = [await _partition(redis, layout, p) for p in range(layout.partitions)]
    dead = 0
    for key in [*layout.dead_streams(), layout.legacy_dead]:
        dead += int(await resolve(redis.xlen(key)))
    return Stats(
        partitions=parts,
        total_length=sum(p.length for p in parts),
        total_lag=sum(p.lag or 0 for p in parts),
        total_pending=sum(p.pending for p in parts),
        dead_letters=dead,
    )


async def handle_stats(request: web.Request) -> web.Response:
    deps = request.app[DEPS_KEY]
    try:
        stats = await collect(deps.redis(), deps.layout)
    except ResponseError as exc:
        log.warning("stats: Redis refused a read: %s", exc)
        raise Unavailable(f"The queue (Redis) refused a read: {exc}", retry_after=1) from None
    except (RedisError, OSError) as exc:
        log.warning("stats: Redis unreachable: %s", exc)
        raise Unavailable("The queue (Redis) is unreachable.", retry_after=1) from None
    return web.json_response(text=stats.model_dump_json())
