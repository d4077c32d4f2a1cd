"""The consumer process refusing to start: one line naming why, exit 1, no traceback.

arq runs the start-up hook; what it raises would otherwise end the process with arq's
traceback. Both cases need a real Redis (the partition count is recorded there, and arq's
worker starts only against a reachable server).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consumer.settings import ConsumerSettings
from storage.queue import StreamLayout, resolve
from tests.consumer.process_support import consumer_env, refusal_line

pytestmark = pytest.mark.integration


async def test_partition_count_mismatch(redis_url: str, tmp_path: Path) -> None:
    settings = ConsumerSettings(redis_url=redis_url, partitions=4, ndjson_dir=tmp_path)
    client = Redis.from_url(redis_url)
    try:
        await resolve(client.hset(StreamLayout(partitions=7).meta, "partitions", "7"))
    finally:
        await client.aclose()
    line = refusal_line("consumer", consumer_env(settings, redis_url))
    assert "LEVIATHAN_PARTITIONS=4" in line
    assert "records 7 partitions" in line


def test_health_port_in_use(redis_url: str, tmp_path: Path) -> None:
    settings = ConsumerSettings(redis_url=redis_url, partitions=2, ndjson_dir=tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = consumer_env(settings, redis_url, LEVIATHAN_CONSUMER_PORT=str(port))
        line = refusal_line("consumer", env)
    assert f"127.0.0.1:{port}" in line
    assert "LEVIATHAN_CONSUMER_PORT" in line
