"""One-slot transactions on a real Redis Cluster, through a slot move and on a single node."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot

from storage.config import StorageSettings
from storage.queue import GROUP, StreamLayout, resolve
from storage.redisconn import as_cluster, atomic
from tests.cluster_support import RedisClusterServers

pytestmark = pytest.mark.integration
LAYOUT = StreamLayout(partitions=4)


def _ack_and_mark(entry_id: str) -> Any:
    def fill(pipe: Pipeline) -> None:
        pipe.xack(LAYOUT.stream(1), GROUP, entry_id)
        pipe.set(LAYOUT.committed_key(1, entry_id), b"1", ex=60)

    return fill


def _port(node: ClusterNode | None) -> int:
    assert node is not None
    return int(node.port)


async def _pending(client: Redis) -> str:
    stream = LAYOUT.stream(1)
    await resolve(client.xgroup_create(stream, GROUP, id="0", mkstream=True))
    entry_id = (await resolve(client.xadd(stream, {"v": b"1"}))).decode()
    await resolve(client.xreadgroup(GROUP, "c", {stream: ">"}))
    return str(entry_id)


async def test_atomic_step_follows_its_slot_when_it_moves(
    cluster_url: str, redis_cluster: RedisClusterServers
) -> None:
    client = StorageSettings(redis_url=cluster_url, redis_cluster=True).stream_redis(
        socket_timeout=5
    )
    try:
        entry_id = await _pending(client)
        second = (await resolve(client.xadd(LAYOUT.stream(1), {"v": b"2"}))).decode()
        await resolve(client.xreadgroup(GROUP, "c", {LAYOUT.stream(1): ">"}))
        assert await atomic(client, LAYOUT.stream(1), _ack_and_mark(entry_id)) == [1, True]
        cluster = as_cluster(client)
        assert cluster is not None
        slot = key_slot(LAYOUT.stream(1).encode())
        owner = redis_cluster.node_of_slot(slot)
        target = next(n for n in redis_cluster.masters() if n is not owner)
        redis_cluster.move_slot(slot, target)
        # the client's slot map still names the old owner: the MULTI meets MOVED there,
        # the map is refreshed, and the retry runs on the new owner
        assert _port(cluster.get_node_from_key(LAYOUT.stream(1))) == owner.port
        assert await atomic(client, LAYOUT.stream(1), _ack_and_mark(second)) == [1, True]
        assert _port(cluster.get_node_from_key(LAYOUT.stream(1))) == target.port
        assert await resolve(client.get(LAYOUT.committed_key(1, second))) == b"1"
        pending = await resolve(client.xpending(LAYOUT.stream(1), GROUP))
        assert pending["pending"] == 0
    finally:
        await client.aclose()


async def test_atomic_step_on_a_single_node(redis_client: Redis) -> None:
    entry_id = await _pending(redis_client)
    assert as_cluster(redis_client) is None
    assert await atomic(redis_client, LAYOUT.stream(1), _ack_and_mark(entry_id)) == [1, True]


async def test_concurrent_slot_map_refreshes_run_one_at_a_time(
    cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many requests that lost the same master refresh together; the nodes manager's
    re-read is not reentrant, so they must never overlap (they did: a RuntimeError, a
    500, during a failover)."""
    client = StorageSettings(redis_url=cluster_url, redis_cluster=True).stream_redis(
        socket_timeout=5
    )
    cluster = as_cluster(client)
    assert cluster is not None
    try:
        await cluster.refresh()
        manager_class = type(cluster.nodes_manager)  # slotted: patched on its class
        reread = manager_class.initialize
        running, most, calls = 0, 0, 0

        async def counted(manager: Any) -> None:
            nonlocal running, most, calls
            running += 1
            calls += 1
            most = max(most, running)
            try:
                await reread(manager)
            finally:
                running -= 1

        monkeypatch.setattr(manager_class, "initialize", counted)
        await asyncio.gather(*(cluster.refresh() for _ in range(20)))
        assert most == 1
        assert 1 <= calls < 20  # those that met a re-read in progress took its map
        assert await resolve(client.set(LAYOUT.stream(2) + ":probe", b"1", ex=5))
    finally:
        await client.aclose()
