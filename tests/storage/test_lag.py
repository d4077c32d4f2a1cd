"""A lag that cannot lie: Redis' XINFO counter checked against the stream itself.

Against the real Redis: the inconsistent counters are made with XSETID ... ENTRIESADDED
(as an AOF repair leaves them) and XDEL (which makes Redis report a null lag).
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from storage.lag import group_row, lag_of, stream_lag
from storage.queue import GROUP, resolve

pytestmark = pytest.mark.integration
STREAM = "lag-test:{0}"


async def _stream(redis: aioredis.Redis, entries: int, delivered: int) -> list[bytes]:
    ids = [await resolve(redis.xadd(STREAM, {b"n": str(i).encode()})) for i in range(entries)]
    await resolve(redis.xgroup_create(STREAM, GROUP, id="0"))
    if delivered:
        await resolve(redis.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=delivered))
    return ids


async def _reported(redis: aioredis.Redis) -> object:
    row = await group_row(redis, STREAM)
    assert row is not None
    return row.get("lag")


async def test_a_consistent_counter_is_used_as_is(redis_client: aioredis.Redis) -> None:
    await _stream(redis_client, 5, delivered=2)
    assert await _reported(redis_client) == 3
    assert await stream_lag(redis_client, STREAM) == 3


async def test_phantom_lag_over_an_empty_stream_is_zero(redis_client: aioredis.Redis) -> None:
    """The dev stack after an AOF repair: everything delivered, acked and trimmed, yet a lag."""
    ids = await _stream(redis_client, 3, delivered=3)
    await resolve(redis_client.xack(STREAM, GROUP, *ids))
    await resolve(redis_client.xtrim(STREAM, maxlen=0, approximate=False))
    last = ids[-1].decode()
    await resolve(
        redis_client.execute_command(  # type: ignore[no-untyped-call]
            "XSETID", STREAM, last, "ENTRIESADDED", 50, "MAXDELETEDID", last
        )
    )
    assert await _reported(redis_client) not in (0, b"0")  # Redis' counter is wrong
    assert await stream_lag(redis_client, STREAM) == 0


async def test_a_counter_larger_than_the_stream_is_bounded(
    redis_client: aioredis.Redis,
) -> None:
    ids = await _stream(redis_client, 5, delivered=2)
    last = ids[-1].decode()
    await resolve(
        redis_client.execute_command(  # type: ignore[no-untyped-call]
            "XSETID", STREAM, last, "ENTRIESADDED", 1000
        )
    )
    assert await _reported(redis_client) == 998
    assert await stream_lag(redis_client, STREAM) == 3  # XLEN 5 - 2 pending


async def test_a_null_lag_is_counted(redis_client: aioredis.Redis) -> None:
    ids = await _stream(redis_client, 5, delivered=2)
    await resolve(redis_client.xdel(STREAM, ids[3]))  # a deleted undelivered entry: lag null
    assert await _reported(redis_client) is None
    assert await stream_lag(redis_client, STREAM) == 2  # ids[2] and ids[4]


async def test_no_group_counts_the_stream_and_no_stream_is_zero(
    redis_client: aioredis.Redis,
) -> None:
    assert await stream_lag(redis_client, STREAM) == 0
    for i in range(4):
        await resolve(redis_client.xadd(STREAM, {b"n": str(i).encode()}))
    assert await stream_lag(redis_client, STREAM) == 4
    row = {"lag": None, "last-delivered-id": b"0-0", "pending": 0}
    assert await lag_of(redis_client, STREAM, row) == 4
