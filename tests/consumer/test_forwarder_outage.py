"""The forwarder through a Redis crash: a private redis-server (AOF, ``appendfsync always``)
is SIGKILLed for longer than the forwarder's socket timeout and restarted; forwarding
resumes by itself and nothing acked by Redis is missing at Spider or out of order."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consumer.forwarder.forward import redis_client
from storage.queue import StreamLayout
from tests.chaos.chaos_support import RedisServer
from tests.consumer.forwarder_support import (
    SpiderSink,
    assert_in_order,
    forwarder,
    spider_settings,
    stream_ids,
    until,
)
from tests.consumer.process_support import bundles, prefill

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.crash()


async def test_forwarding_resumes_after_redis_was_killed_and_restarted(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    layout = StreamLayout(partitions=2)
    sink = SpiderSink()
    await sink.start()
    settings = spider_settings(sink.url)
    client = redis_client(private_redis.url, settings)
    fwd = forwarder(client, layout, settings)
    admin = Redis.from_url(private_redis.url)
    task = asyncio.create_task(fwd.run())
    try:
        await prefill(admin, layout, bundles(20, "before"))
        await until(lambda: len(sink.accepted) == 20, 20, "the bundles before the crash")
        private_redis.crash()
        await asyncio.sleep(7)  # longer than the socket timeout (block + 5 s)
        assert not task.done()
        await asyncio.to_thread(private_redis.start)
        await prefill(admin, layout, bundles(20, "after"))
        expected = await stream_ids(admin, layout)
        await until(
            lambda: len({(r.partition, r.entry_id) for r in sink.accepted}) == 40,
            30,
            "the bundles after the restart",
        )
    finally:
        fwd.stop()
        await asyncio.wait_for(task, 15)
        await sink.stop()
        await admin.aclose()
        await client.aclose()
    got = sink.by_partition()
    for p in range(layout.partitions):
        assert set(got[p]) == set(expected[p])
        assert_in_order(got[p])
    assert any("redis failed on partition" in r.getMessage() for r in caplog.records)
