"""The Spider forwarder on a real Redis Cluster: per-partition leases, every bundle in order,
a refused one moved to its partition's Spider dead stream with the ack (one slot)."""

from __future__ import annotations

import asyncio

import pytest

from consumer.forwarder.stream import STATUS
from storage.config import StorageSettings
from storage.queue import StreamLayout, resolve
from tests.consumer.forwarder_support import (
    SpiderSink,
    assert_in_order,
    forwarder,
    spider_settings,
    until,
)
from tests.consumer.process_support import bundles, prefill

pytestmark = pytest.mark.integration


async def test_forwarding_from_a_cluster(cluster_url: str) -> None:
    layout = StreamLayout(partitions=6)
    redis = StorageSettings(redis_url=cluster_url, redis_cluster=True).stream_redis(
        socket_timeout=5
    )
    raws = bundles(30)
    refused = raws[7]["bundle_id"]
    sink = SpiderSink(script=[], refuse={refused})
    await sink.start()
    fwd = forwarder(redis, layout, spider_settings(sink.url))
    try:
        await prefill(redis, layout, raws)
        task = asyncio.create_task(fwd.run())
        try:
            await until(lambda: len(sink.accepted) == 29, 30, "every other bundle")
        finally:
            fwd.stop()
            await asyncio.wait_for(task, 10)
        assert {r.bundle["bundle_id"] for r in sink.accepted} == {
            raw["bundle_id"] for raw in raws if raw["bundle_id"] != refused
        }
        for ids in sink.by_partition().values():
            assert_in_order(ids)
        partition = layout.partition_of(refused)
        dead = await resolve(redis.xrange(layout.spider_dead(partition)))
        assert len(dead) == 1
        assert dead[0][1][STATUS] == b"422"
    finally:
        await sink.stop()
        await redis.aclose()
