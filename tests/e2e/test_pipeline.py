"""End to end: real ``python -m ingest`` and ``python -m consumer`` processes.

Factory bundles are POSTed with ``?wait=``; each answer must be 200 (persisted), and the
stored events must equal the posted ones, on NDJSON and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from consumer.settings import ConsumerSettings
from storage.config import create_store
from storage.schema import Bundle
from tests import factories as f
from tests.consumer.process_support import (
    wait_for,
)
from tests.e2e.conftest import TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def posted_bundles() -> list[dict[str, Any]]:
    raws = [f.attempt_lifecycle(f"e2e-att-{i}", f"e2e-task-{i}") for i in range(10)]
    raws += f.single_event_posts("e2e-single", "e2e-task-s")
    raws.append(f.tasks_with_dependencies("e2e-target"))
    raws.append(f.attempt_lifecycle("e2e-fail", "e2e-task-f", outcome="failed"))
    return raws


async def test_posted_bundles_are_stored_exactly(
    processes: tuple[str, str], settings: ConsumerSettings
) -> None:
    api, consumer = processes

    async def up(url: str) -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(url) as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(lambda: up(f"{api}/readyz"), 60, "ingest readiness")
    await wait_for(lambda: up(f"{consumer}/readyz"), 60, "consumer readiness")
    raws = posted_bundles()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def post(raw: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            url = f"{api}/v1/events/ingest?wait=20"
            async with session.post(url, json=raw) as resp:
                return resp.status, await resp.json()

        answers = await asyncio.gather(*(post(raw) for raw in raws))
    for raw, (status, body) in zip(raws, answers, strict=True):
        assert status == 200, body
        assert body == {
            "status": "ok",
            "bundle_id": raw["bundle_id"],
            "ingested": len(raw["events"]),
            "stored": len(raw["events"]),
            "revisions": 0,
            "duplicates": 0,
            "dead_lettered": 0,
        }

    expected = {
        e.event_id: (e.event_type, e.model_dump(mode="json")["timestamp"], e.payload, b.bundle_id)
        for b in (Bundle.model_validate(raw) for raw in raws)
        for e in b.events
    }
    store = create_store(settings)
    await store.open()
    try:
        stored = [e async for e in store.iter_events()]
    finally:
        await store.close()
    assert len(stored) == len(expected)
    assert {
        e.event_id: (e.event_type, e.timestamp, e.payload, e.bundle_id) for e in stored
    } == expected
