"""The forwarder in real processes: inside ``python -m consumer`` beside the storage
writers, and on its own as ``leviathan-cp forward`` with its health server.

A Spider that hangs past the timeout never slows the consumer: its probes answer at once
and the writers store everything; trimming keeps what was not forwarded yet and removes
it once it was. SIGTERM drains both processes to exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from leviathan_cp.ports import free_port
from storage.config import create_store
from storage.queue import resolve
from tests.consumer.conftest import make_settings
from tests.consumer.forwarder_support import SpiderSink, assert_in_order, stream_ids, until
from tests.consumer.process_support import (
    ROOT,
    backlog,
    bundles,
    consumer_env,
    event_ids,
    prefill,
    start_consumer,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPIDER_ENV = {
    "LEVIATHAN_SPIDER_TIMEOUT_SECONDS": "0.5",
    "LEVIATHAN_SPIDER_RETRY_MIN_S": "0.05",
    "LEVIATHAN_SPIDER_RETRY_MAX_S": "0.2",
    "LEVIATHAN_SPIDER_BLOCK_MS": "100",
}


def start_forward(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "leviathan_cp", "forward"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )


async def probe(url: str) -> tuple[int, float, str]:
    """Status, seconds taken and body of one GET (connection errors count as status 0)."""
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as resp,
        ):
            return resp.status, time.monotonic() - started, await resp.text()
    except aiohttp.ClientError:
        return 0, time.monotonic() - started, ""


async def test_consumer_with_forwarding_keeps_storing_and_answering_while_spider_hangs(
    redis_client: Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, partitions=2, batch=20, consumer_name="fwd-consumer")
    layout = settings.layout
    sink = SpiderSink(hanging=True, slow_s=3.0)
    await sink.start()
    env = consumer_env(
        settings,
        redis_url,
        LEVIATHAN_SPIDER_ENABLED="true",
        LEVIATHAN_SPIDER_URL=sink.url,
        LEVIATHAN_CONSUMER_MAINTENANCE_INTERVAL_S="1",
        **SPIDER_ENV,
    )
    health = f"http://127.0.0.1:{env['LEVIATHAN_CONSUMER_PORT']}"
    raws = bundles(100)
    await prefill(redis_client, layout, raws)
    store = create_store(settings)
    await store.open()
    proc = start_consumer(env, tmp_path / "consumer.log")
    try:

        async def stored() -> bool:
            return await store.count_events() == len(event_ids(raws))

        async def writers_done() -> bool:
            return await backlog(redis_client, layout) == 0

        await wait_for(stored, 60, "the writers to store everything while Spider hangs")
        await wait_for(writers_done, 30, "the writers to ack everything")
        for _ in range(3):  # several trims (every second) and hanging POSTs later
            for path in ("/healthz", "/readyz"):
                status, took, _ = await probe(health + path)
                assert status == 200, path
                assert took < 1.0, f"{path} took {took:.2f}s while Spider hangs"
            await asyncio.sleep(1.0)
        assert sink.accepted == []
        ids = await stream_ids(redis_client, layout)
        # acked by the writers, not forwarded yet: trimming keeps every entry
        assert sum(len(v) for v in ids.values()) == 100

        sink.hanging = False
        await until(
            lambda: len({(r.partition, r.entry_id) for r in sink.accepted}) == 100,
            60,
            "every bundle at Spider",
        )
        got = sink.by_partition()
        for p in range(layout.partitions):
            assert set(got[p]) == set(ids[p])
            assert_in_order(got[p])
        _, _, metrics = await probe(health + "/metrics")
        assert "leviathan_spider_forwarded_total" in metrics
        assert 'leviathan_spider_lag{partition="0"}' in metrics

        async def trimmed() -> bool:
            lengths = [int(await resolve(redis_client.xlen(s))) for s in layout.streams()]
            return sum(lengths) == 0

        await wait_for(trimmed, 30, "trimming once every group acked")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        await sink.stop()
        await store.close()


async def test_forward_command_serves_health_and_drains_on_sigterm(
    redis_client: Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, partitions=2)
    layout = settings.layout
    sink = SpiderSink()  # down until started
    port = free_port()
    env = consumer_env(
        settings,
        redis_url,
        LEVIATHAN_SPIDER_URL=sink.url,
        LEVIATHAN_SPIDER_TOKEN="spider-secret",
        LEVIATHAN_SPIDER_PORT=str(port),
        LEVIATHAN_SPIDER_HOST="127.0.0.1",
        LEVIATHAN_SPIDER_UNREADY_AFTER_S="0.5",
        **SPIDER_ENV,
    )
    health = f"http://127.0.0.1:{port}"
    raws = bundles(30)
    await prefill(redis_client, layout, raws)
    proc = start_forward(env, tmp_path / "forward.log")
    try:

        async def not_ready_for_spider() -> bool:
            status, _, body = await probe(health + "/readyz")
            return status == 503 and "spider: failing" in body

        await wait_for(not_ready_for_spider, 30, "/readyz to report Spider down")
        assert (await probe(health + "/healthz"))[0] == 200
        await sink.start()

        async def ready() -> bool:
            return (await probe(health + "/readyz"))[0] == 200

        await until(lambda: len(sink.accepted) >= 30, 30, "every bundle at Spider")
        await wait_for(ready, 10, "/readyz once Spider answers")
        assert {r.headers["Authorization"] for r in sink.accepted} == {"Bearer spider-secret"}
        _, _, metrics = await probe(health + "/metrics")
        assert "leviathan_spider_forwarded_total 30.0" in metrics
        assert 'leviathan_spider_failed_total{reason="connection"}' in metrics
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        await sink.stop()
    got = sink.by_partition()
    ids = await stream_ids(redis_client, layout)
    for p in range(layout.partitions):
        assert set(got[p]) == set(ids[p])
        assert_in_order(got[p])
