"""Backpressure figures on a real Redis Cluster: the lag summed over partitions on every
master, and the memory of the master with the least room (INFO goes to one node only)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from ingest.backpressure import measure
from storage.config import StorageSettings
from storage.queue import GROUP, StreamLayout, resolve
from storage.redisconn import as_cluster
from tests.cluster_support import RedisClusterServers

pytestmark = pytest.mark.integration
LAYOUT = StreamLayout(partitions=6)
MIB = 1024 * 1024


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[Redis]:
    client = StorageSettings(redis_url=cluster_url, redis_cluster=True).stream_redis(
        socket_timeout=5
    )
    try:
        yield client
    finally:
        await client.aclose()


async def test_lag_and_the_fullest_master(
    cluster: Redis, redis_cluster: RedisClusterServers
) -> None:
    for p in range(LAYOUT.partitions):
        await resolve(cluster.xgroup_create(LAYOUT.stream(p), GROUP, id="0", mkstream=True))
        for _ in range(p + 1):
            await resolve(cluster.xadd(LAYOUT.stream(p), {"v": b"1"}))
    full = redis_cluster.node_of_slot(key_slot(LAYOUT.stream(4).encode()))
    used = int(full.cli("INFO", "memory").split("used_memory:")[1].split()[0])
    # this master is close to its maxmemory: its mark is 80 % of it, below its use
    full.cli("CONFIG", "SET", "maxmemory", str(used + MIB // 4))
    try:
        state = await measure(cluster, LAYOUT, high_water_bytes=512 * MIB)
        assert state.lag == sum(range(1, LAYOUT.partitions + 1))
        assert state.maxmemory == used + MIB // 4  # the fullest master's figures
        assert state.used_memory > state.memory_mark(512 * MIB)
        assert as_cluster(cluster) is not None
    finally:
        full.cli("CONFIG", "SET", "maxmemory", "0")
