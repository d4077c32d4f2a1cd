"""End to end: a repository bootstrapped twice through real ingest and consumer processes.

The repo indexer's ids are deterministic (``bootstrap-{target}-started``, ``file-{sha12}``
shared by identical files, ``repo-indexed-{target}``), so its second run posts the same ids
with new content. Every event of both runs must be stored, as revisions of those ids, with
nothing dead-lettered, and the graph must show the second run's values — on NDJSON and on
PostgreSQL.
"""

from __future__ import annotations

from collections import Counter

import aiohttp
import pytest
from redis.asyncio import Redis

from consumer.settings import ConsumerSettings
from storage.chain import payload_json
from storage.config import create_store
from storage.projection import Graph, project
from storage.schema import Bundle
from tests import factories as f
from tests.consumer.process_support import (
    wait_for,
)
from tests.e2e.conftest import TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_rerun_with_the_same_ids_stores_every_event(
    processes: tuple[str, str], settings: ConsumerSettings, redis_url: str
) -> None:
    api = processes[0]

    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{api}/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(ready, 60, "ingest readiness")
    runs = f.bootstrap_rerun(target_event=True)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for raw in runs:  # a week apart: one after the other
            async with session.post(f"{api}/v1/events/ingest?wait=20", json=raw) as resp:
                answer = await resp.json()
                assert resp.status == 200, answer
                assert answer["status"] == "ok", answer
        async with session.get(f"{api}/v1/events?limit=100") as resp:
            assert resp.status == 200
            listed = (await resp.json())["events"]

    posted = [
        (e.event_id, e.model_dump(mode="json")["timestamp"], e.payload)
        for run in runs
        for e in Bundle.model_validate(run).events
    ]
    assert len(posted) == 16
    # every event of both runs is listed once, with its revision number
    assert Counter((e["event_id"], e["timestamp"], payload_json(e["payload"])) for e in listed) == (
        Counter((i, t, payload_json(p)) for i, t, p in posted)
    )
    revisions = {(e["event_id"], e["revision"]) for e in listed}
    assert {
        ("bootstrap-demo-started", 2),
        ("repo-indexed-demo", 2),
        ("bootstrap-demo-completed", 2),
        ("file-7bfba6e0021f", 4),  # two identical files per run, two runs
    } <= revisions

    redis = Redis.from_url(redis_url)
    try:
        dead = [key async for key in redis.scan_iter(match="*dead*")]
        streams = [key for key in dead if await redis.type(key) == b"stream"]
        assert sum([await redis.xlen(key) for key in streams]) == 0
    finally:
        await redis.aclose()

    store = create_store(settings)
    await store.open()
    try:
        stored = [e async for e in store.iter_events()]
        graph = await store.graph()
    finally:
        await store.close()
    assert len(stored) == 16
    assert (graph.node("Target", "demo") or {})["commit_sha"] == "8b77d01"
    assert graph == project(Graph(), stored)
