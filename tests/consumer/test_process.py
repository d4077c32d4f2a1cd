"""The real consumer process against real Redis and both real backends.

SIGKILL at a random point of a large backlog (so, sometimes between write and XACK) then
restart loses and duplicates nothing, on one Redis node and on a Redis Cluster; SIGTERM
drains and exits 0 with the batch acked; a database outage grows the backlog, which drains
once the database is back.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader
from storage.base import EventStore
from storage.config import create_store
from tests.consumer.conftest import FlakyStore, SettingsFactory
from tests.consumer.process_support import (
    backlog,
    bundles,
    consumer_env,
    event_ids,
    prefill,
    start_consumer,
    wait_for,
)
from tests.topology import QueueTopology

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def stored(store: EventStore) -> list[str]:
    return [e.event_id async for e in store.iter_events()]


async def test_sigkill_then_restart_loses_and_duplicates_nothing(
    backend_settings: SettingsFactory, queue_topology: QueueTopology, tmp_path: Path
) -> None:
    """On one Redis node, and on the Redis Cluster (streams on three masters, arq's keys on a
    single node): six partitions, so the cluster's streams spread over its masters."""
    settings = backend_settings(partitions=6, batch=20, consumer_name="victim")
    queue = queue_topology.stream_redis()
    # 15,000 events: one consumer drains them in about half a second on either backend, so
    # a kill after 200-2,000 of them still lands mid-backlog (3,000 were sometimes all
    # written before a 100 ms poll noticed the threshold)
    raws = bundles(3000)
    await prefill(queue, settings.layout, raws)
    store = create_store(settings)
    await store.open()
    try:
        env = consumer_env(settings, queue_topology.redis_url, **queue_topology.env)
        proc = start_consumer(env, tmp_path / "consumer.log")
        threshold = random.randint(200, 2000)  # of 15,000 events

        async def some_written() -> bool:
            return await store.count_events() >= threshold

        await wait_for(some_written, 60, "the first events", interval=0.01)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        assert await store.count_events() < len(event_ids(raws)), "killed too late to matter"
        restarted = start_consumer(env, tmp_path / "consumer.log")

        async def drained() -> bool:
            return await backlog(queue, settings.layout) == 0

        await wait_for(drained, 90, "the backlog to drain after restart")
        restarted.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(restarted.wait, 30) == 0
        ids = await stored(store)
        assert len(ids) == len(set(ids))
        assert set(ids) == event_ids(raws)
        for partition in range(settings.partitions):
            assert (await store.verify_chain(partition)).ok
    finally:
        await store.close()
        await queue.aclose()


async def test_sigterm_drains_exits_0_with_batch_acked(
    backend_settings: SettingsFactory, redis_client: Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = backend_settings(partitions=2, batch=50, consumer_name="drainer")
    raws = bundles(800)
    await prefill(redis_client, settings.layout, raws)
    store = create_store(settings)
    await store.open()
    try:
        proc = start_consumer(consumer_env(settings, redis_url), tmp_path / "consumer.log")

        async def started() -> bool:
            return await store.count_events() > 0

        await wait_for(started, 60, "the first events")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        delivered: set[str] = set()
        for stream in settings.layout.streams():
            summary = await redis_client.xpending(stream, "writers")
            assert summary["pending"] == 0, "a delivered batch was left unacked"
            group = (await redis_client.xinfo_groups(stream))[0]
            last = group["last-delivered-id"]
            for _, fields in await redis_client.xrange(stream, max=last):
                delivered.add(orjson.loads(fields[b"bundle"])["bundle_id"])
        ids = await stored(store)
        assert len(ids) == len(set(ids))
        expected = event_ids([raw for raw in raws if raw["bundle_id"] in delivered])
        assert set(ids) == expected
    finally:
        await store.close()


async def test_storage_outage_grows_backlog_then_drains(
    backend_settings: SettingsFactory, redis_client: Redis, tmp_path: Path
) -> None:
    settings = backend_settings(partitions=2, batch=10)
    inner = create_store(settings)
    await inner.open()
    flaky = FlakyStore(inner, failures=10**9)  # "down" until we say otherwise
    reader = Reader(redis_client, flaky, settings, ConsumerMetrics())
    task = asyncio.create_task(reader.run())
    try:
        raws = bundles(50)
        await prefill(redis_client, settings.layout, raws)
        await asyncio.sleep(0.5)
        assert not reader.storage_ok
        assert await backlog(redis_client, settings.layout) == 50
        assert await inner.count_events() == 0
        flaky.failures = 0  # the database is back

        async def drained() -> bool:
            return await backlog(redis_client, settings.layout) == 0

        await wait_for(drained, 30, "the backlog to drain")
        assert reader.storage_ok
        ids = await stored(inner)
        assert sorted(ids) == sorted(event_ids(raws))
    finally:
        reader.stop()
        await asyncio.wait_for(task, 10)
        await inner.close()
