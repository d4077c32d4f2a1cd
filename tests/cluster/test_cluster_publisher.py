"""The group-commit publisher on a real Redis Cluster (one per master, routed by slot,
following a moved slot) and its replica acknowledgement (WAIT) on a cluster and one node."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from ingest.cluster_publisher import ClusterPublisher
from ingest.publisher import UNREPLICATED_DETAIL, Publisher
from storage.config import StorageSettings
from storage.queue import StreamLayout, resolve
from storage.redisconn import StreamCluster, as_cluster
from tests.cluster_support import MASTERS, RedisClusterServers
from webcore.errors import Unavailable

pytestmark = pytest.mark.integration
LAYOUT = StreamLayout(partitions=12)
FIELDS = {b"v": b"1", b"bundle": b"{}"}


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[StreamCluster]:
    client = StorageSettings(redis_url=cluster_url, redis_cluster=True).stream_redis(
        socket_timeout=5
    )
    found = as_cluster(client)
    assert found is not None
    try:
        yield found
    finally:
        await client.aclose()


def _router(cluster: StreamCluster, replicas: int = 0) -> ClusterPublisher:
    def node(redis: Redis) -> Publisher:
        return Publisher(redis, max_batch=64, timeout=2.0, retry_after=1, min_replica_acks=replicas)

    return ClusterPublisher(cluster, node, timeout=2.0, retry_after=1)


async def test_one_publisher_per_master_and_a_moved_slot_is_followed(
    cluster: StreamCluster, redis_cluster: RedisClusterServers
) -> None:
    router = _router(cluster)
    router.start()
    try:
        for p in range(LAYOUT.partitions):
            await router.publish(LAYOUT.stream(p), FIELDS)
        assert len(router._nodes) == MASTERS  # one node publisher per master
        slot = key_slot(LAYOUT.stream(5).encode())
        owner = redis_cluster.node_of_slot(slot)
        redis_cluster.move_slot(slot, next(n for n in redis_cluster.masters() if n is not owner))
        # the router's slot map still names the old owner: MOVED there, then the new one
        entry_id = await router.publish(LAYOUT.stream(5), FIELDS)
        ids = await router.publish_atomic(LAYOUT.stream(5), [FIELDS, FIELDS])
        assert len(ids) == 2
        entries = await resolve(cluster.xrange(LAYOUT.stream(5)))
        assert [i.decode() for i, _ in entries][-3:] == [entry_id, *ids]
    finally:
        await router.stop()
    for p in range(LAYOUT.partitions):
        assert await resolve(cluster.xlen(LAYOUT.stream(p))) == (4 if p == 5 else 1)


async def test_replica_acknowledged_writes_on_a_cluster(cluster: StreamCluster) -> None:
    router = _router(cluster, replicas=1)  # each master has one replica
    router.start()
    try:
        await router.publish(LAYOUT.stream(0), FIELDS)
    finally:
        await router.stop()
    router = _router(cluster, replicas=2)  # more than there are
    router.start()
    try:
        with pytest.raises(Unavailable, match="replicas") as info:
            await router.publish(LAYOUT.stream(0), FIELDS)
        assert info.value.headers["Retry-After"] == "1"
    finally:
        await router.stop()


async def test_a_single_node_without_replicas_answers_503(redis_client: Redis) -> None:
    publisher = Publisher(redis_client, max_batch=8, timeout=0.4, retry_after=3, min_replica_acks=1)
    publisher.start()
    try:
        with pytest.raises(Unavailable) as info:
            await publisher.publish(LAYOUT.stream(0), FIELDS)
        assert info.value.detail == UNREPLICATED_DETAIL
        assert info.value.headers["Retry-After"] == "3"
    finally:
        await publisher.stop()
    plain = Publisher(redis_client, max_batch=8, timeout=0.4, retry_after=3)
    plain.start()
    try:
        assert await plain.publish(LAYOUT.stream(0), FIELDS)
    finally:
        await plain.stop()
