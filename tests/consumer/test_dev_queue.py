"""The consumer process runs against fakeredis' TCP server (the queue of ``leviathan-cp dev``).

That server lacks INFO, which arq calls at start; consumer.worker guards it. No real
services needed, but it starts a process, hence ``slow``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from fakeredis import TcpFakeServer
from redis.asyncio import Redis

from leviathan_cp.ports import free_port
from storage.config import create_store
from tests.consumer.conftest import make_settings
from tests.consumer.process_support import (
    backlog,
    bundles,
    consumer_env,
    event_ids,
    prefill,
    start_consumer,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def fake_server_url() -> Iterator[str]:
    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.shutdown()
        server.server_close()


async def test_consumer_runs_on_fakeredis_tcp_server(fake_server_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, partitions=2, consumer_name="dev")
    env = consumer_env(settings, fake_server_url)
    proc = start_consumer(env, tmp_path / "consumer.log")
    redis = Redis.from_url(fake_server_url)
    store = create_store(settings)
    try:
        url = f"http://127.0.0.1:{env['LEVIATHAN_CONSUMER_PORT']}/readyz"

        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as s, s.get(url) as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, 30, "readiness on the fakeredis queue")
        raws = bundles(20)
        await prefill(redis, settings.layout, raws)

        async def drained() -> bool:
            return await backlog(redis, settings.layout) == 0

        await wait_for(drained, 30, "the consumer to drain")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        await store.open()
        assert {e.event_id async for e in store.iter_events()} == event_ids(raws)
    finally:
        if proc.poll() is None:
            proc.kill()
        await store.close()
        await redis.aclose()
