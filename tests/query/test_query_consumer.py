"""Invalidate end to end: query app → Redis stream → real consumer Reader → storage → query."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from pytest_aiohttp import AiohttpClient

from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, ensure_group
from consumer.settings import ConsumerSettings
from storage.config import StorageSettings, create_store
from tests.query.query_support import AUTH, LAYOUT, AppFactory

pytestmark = pytest.mark.integration


async def drain(settings: StorageSettings, redis: aioredis.Redis) -> int:
    """One pass of a real consumer over every partition; returns events written."""
    consumer_settings = ConsumerSettings(
        **settings.model_dump(), consumer_name="query-test", block_ms=10
    )
    store = create_store(consumer_settings)
    await store.open()
    try:
        reader = Reader(redis, store, consumer_settings, ConsumerMetrics())
        written = 0
        for partition in range(LAYOUT.partitions):
            entries = await reader.read_once(partition)
            if entries:
                written += (await reader.handle_batch(partition, entries)).stored
        return written
    finally:
        await store.close()


async def test_invalidation_is_stored_by_the_consumer_and_served(
    seeded: StorageSettings,
    make_app: AppFactory,
    aiohttp_client: AiohttpClient,
    redis: aioredis.Redis,
) -> None:
    await ensure_group(redis, LAYOUT)
    client = await aiohttp_client(make_app(), headers=AUTH)
    resp = await client.post("/v1/attempts/att-1/invalidate", json={"reason": "wrong branch"})
    assert resp.status == 202
    event_id = (await resp.json())["event_id"]

    assert await drain(seeded, redis) == 1

    for app_client in (client, await aiohttp_client(make_app(), headers=AUTH)):  # + restart
        detail = await (await app_client.get("/v1/attempts/att-1")).json()
        last = detail["events"][-1]
        assert (last["event_id"], last["event_type"]) == (event_id, "attempt.invalidated")
        assert last["payload"]["reason"] == "wrong branch"
        recent = await (await app_client.get("/v1/events/recent?limit=1")).json()
        assert recent[0]["event_id"] == event_id
        verify = await (await app_client.get("/v1/events/verify")).json()
        assert all(s["ok"] for s in verify)
