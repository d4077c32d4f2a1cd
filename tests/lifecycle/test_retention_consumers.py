"""Retention while real consumer processes drain a backlog into the same storage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consumer.settings import ConsumerSettings
from leviathan_cp.cli import main
from storage.config import StorageSettings, create_store
from tests.consumer.process_support import (
    backlog,
    bundles,
    consumer_env,
    prefill,
    start_consumer,
    wait_for,
)
from tests.factories import attempt_lifecycle, envelope, tasks_with_dependencies

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OLD = 1_700_000_000.0  # 2023: every pre-existing event arrived long before the cut


async def test_retain_while_consumers_write(
    backend: StorageSettings,
    tmp_path: Path,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = backend  # the commands' env points at it (tests/lifecycle/conftest.py)
    store = create_store(settings, writer=True)
    await store.open()
    try:
        await store.write_batch(0, [envelope(tasks_with_dependencies("demo"), "0-1", OLD)])
        for i in range(60):  # 300 old events, 60 attempts
            raw = attempt_lifecycle(f"att-old{i}", f"task-{i}", id_prefix=f"old{i}")
            await store.write_batch(i % 8, [envelope(raw, f"{i + 1}-0", OLD + i)])
        old = await store.count_events()
    finally:
        await store.close()

    consumer = ConsumerSettings(
        backend=settings.backend,
        ndjson_dir=settings.ndjson_dir,
        postgres_dsn=settings.postgres_dsn,
        partitions=settings.partitions,
        consumer_name="c1",
        batch=20,
    )
    redis = Redis.from_url(redis_url)
    live = bundles(400, prefix="att-live")  # 2,000 events arriving now
    procs = []
    try:
        await prefill(redis, settings.layout, live[:100])
        for name in ("c1", "c2"):
            env = consumer_env(consumer, redis_url, HOSTNAME=name)
            procs.append(start_consumer(env, tmp_path / f"{name}.log"))

        async def feed() -> None:
            for start in range(100, 400, 50):
                await prefill(redis, settings.layout, live[start : start + 50])
                await asyncio.sleep(0.2)

        feeding = asyncio.create_task(feed())
        await wait_for(lambda: _stored_over(settings, old + 100), 60, "the consumers to write")
        args = ["retain", "--before", "2025-01-01", "--batch", "25"]
        assert await asyncio.to_thread(main, args) == 0
        assert f"retain: {old} events removed" in capsys.readouterr().out
        await feeding

        async def drained() -> bool:
            return await backlog(redis, settings.layout) == 0

        await wait_for(drained, 120, "the consumers to drain the backlog")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await asyncio.to_thread(proc.wait, 30)
        await redis.aclose()

    store = create_store(settings)
    await store.open()
    try:
        events = [e async for e in store.iter_events()]
        assert len(events) == 2000
        assert all(e.attempt_id and e.attempt_id.startswith("att-live") for e in events)
        assert await store.get_attempt("att-old0") is not None  # the graph kept it
        assert len((await store.list_attempts(limit=1000)).items) == 460
        tasks = (await store.list_tasks(limit=1000)).items
        assert len(tasks) == 3
        assert sorted(len(t.depends_on) for t in tasks) == [0, 1, 2]
    finally:
        await store.close()
    assert await asyncio.to_thread(main, ["verify", "--full"]) == 0


async def _stored_over(settings: StorageSettings, count: int) -> bool:
    store = create_store(settings)
    await store.open()
    try:
        return await store.count_events() > count
    finally:
        await store.close()
