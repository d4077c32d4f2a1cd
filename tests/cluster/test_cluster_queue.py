"""The stream layout on a real Redis Cluster: partition-count record, one slot per partition."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from storage.config import StorageSettings
from storage.queue import PartitionMismatchError, StreamLayout, ensure_partition_count, resolve
from tests.cluster_support import MASTERS, RedisClusterServers

pytestmark = pytest.mark.integration


async def test_partition_count_recorded_and_checked_on_a_cluster(cluster_url: str) -> None:
    settings = StorageSettings(redis_url=cluster_url, redis_cluster=True, partitions=6)
    client = settings.stream_redis(socket_timeout=5)
    try:
        await ensure_partition_count(client, settings.layout)
        await ensure_partition_count(client, settings.layout)  # a restart agrees
        with pytest.raises(PartitionMismatchError, match="records 6 partitions"):
            await ensure_partition_count(client, StreamLayout(partitions=7))
    finally:
        await client.aclose()


async def test_every_partition_key_stays_in_its_slot(
    cluster_url: str, redis_cluster: RedisClusterServers
) -> None:
    layout = StreamLayout(partitions=12)
    settings = StorageSettings(redis_url=cluster_url, redis_cluster=True, partitions=12)
    client = settings.stream_redis(socket_timeout=5)
    try:
        for p in range(layout.partitions):
            slot = key_slot(layout.stream(p).encode())
            assert key_slot(layout.committed_key(p, "1-0").encode()) == slot
            assert key_slot(layout.spider_lease(p).encode()) == slot
            assert key_slot(layout.writer_lease(p).encode()) == slot
            assert key_slot(layout.inflight(p).encode()) == slot
            await resolve(client.xadd(layout.stream(p), {"v": b"1"}))
        owners = {redis_cluster.node_of_slot(key_slot(s.encode())).port for s in layout.streams()}
        assert len(owners) == MASTERS  # twelve partitions spread over every shard
        for p in range(layout.partitions):
            assert await resolve(client.xlen(layout.stream(p))) == 1
    finally:
        await client.aclose()
