"""The real consumer process on a real Redis Cluster: streams on three masters, arq's keys on
a single node, a SIGKILL mid-backlog and a restart lose and duplicate nothing."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest
from redis.asyncio import Redis

from storage.base import EventStore
from storage.config import StorageSettings, create_store
from tests.consumer.conftest import SettingsFactory
from tests.consumer.process_support import (
    backlog,
    bundles,
    consumer_env,
    event_ids,
    prefill,
    start_consumer,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def stored(store: EventStore) -> list[str]:
    return [e.event_id async for e in store.iter_events()]


async def test_consumer_killed_mid_backlog_on_a_cluster_loses_and_duplicates_nothing(
    backend_settings: SettingsFactory, cluster_url: str, redis_url: str, tmp_path: Path
) -> None:
    settings = backend_settings(partitions=6, batch=20, consumer_name="victim")
    cluster: Redis = StorageSettings(redis_url=cluster_url, redis_cluster=True).stream_redis()
    raws = bundles(3000)
    await prefill(cluster, settings.layout, raws)
    store = create_store(settings)
    await store.open()
    try:
        # arq on the single-node test database, the streams on the cluster
        env = consumer_env(
            settings, cluster_url, LEVIATHAN_REDIS_CLUSTER="1", LEVIATHAN_ARQ_REDIS_URL=redis_url
        )
        proc = start_consumer(env, tmp_path / "consumer.log")
        threshold = random.randint(200, 2000)

        async def some_written() -> bool:
            return await store.count_events() >= threshold

        await wait_for(some_written, 60, "the first events", interval=0.01)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        restarted = start_consumer(env, tmp_path / "consumer.log")

        async def drained() -> bool:
            return await backlog(cluster, settings.layout) == 0

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
        await cluster.aclose()
