"""Partition leases and the writers' rebalancing (fakeredis: no scripting needed)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.lock import Lock

from consumer.lease import Lease
from consumer.ownership import Ownership
from storage.queue import StreamLayout


def lease(redis: Redis, ttl: float = 5.0) -> Lease:
    lock = Lock(redis, "lease-key", timeout=ttl, blocking=False, thread_local=False)
    return Lease(lock, 0, what="test")


async def test_one_holder_at_a_time_and_a_lost_lease_stays_lost(fake_redis: Redis) -> None:
    a, b = lease(fake_redis), lease(fake_redis)
    assert await a.take()
    assert not await b.take()
    assert await a.renew(force=True)
    assert 4.0 < a.valid_for() <= 5.0
    await a.release()
    assert a.valid_for() <= 0
    assert await b.take()
    assert not await a.renew(force=True)  # b holds it now
    assert not await a.take()


async def test_writers_share_the_partitions_and_rebalance(fake_redis: Redis) -> None:
    layout = StreamLayout(prefix="t", partitions=8)
    first = Ownership(fake_redis, layout, "first", lease_s=10)
    await first.heartbeat()
    for p in range(8):
        assert await first.acquire(p)  # alone: all eight
    second = Ownership(fake_redis, layout, "second", lease_s=10)
    await second.heartbeat()
    await first.heartbeat()
    assert first.share == second.share == 4
    assert first.over_share()
    for p in range(8):  # each partition task of the first gives one up after its batch
        if first.over_share():
            await first.release(p)
    assert first.held == {4, 5, 6, 7}
    assert [await second.acquire(p) for p in range(8)] == [True] * 4 + [False] * 4
    assert first.may_write(4)
    assert not first.may_write(0)
    await second.leave()
    await first.heartbeat()
    assert first.share == 8
    assert all([await first.acquire(p) for p in range(4)])
