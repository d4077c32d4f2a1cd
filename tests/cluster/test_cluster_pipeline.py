"""End to end on a real Redis Cluster: ``python -m ingest`` and ``python -m consumer`` with
their streams on three masters. Bundles POSTed with ``?wait=`` are answered 200 with their
counts, stored exactly and chained; an undecodable entry is dead-lettered to its partition's
dead stream and ``leviathan-cp dlq`` lists and replays it on the cluster."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from storage.config import create_store
from storage.queue import resolve
from tests import factories as f
from tests.chaos.chaos_stack import TOKEN, StackFactory
from tests.consumer.process_support import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def posted_bundles() -> list[dict[str, Any]]:
    raws = [f.attempt_lifecycle(f"cl-att-{i}", f"cl-task-{i}") for i in range(10)]
    raws += f.single_event_posts("cl-single", "cl-task-s")
    raws.append(f.tasks_with_dependencies("cl-target"))
    return raws


async def test_dead_letter_and_replay_on_a_cluster(cluster_stack: StackFactory) -> None:
    stack = cluster_stack("ndjson")
    await stack.start()
    redis = stack.settings().stream_redis()
    try:
        await resolve(redis.xadd(stack.layout.stream(2), {b"v": b"99", b"bundle": b"{}"}))
        for _ in range(100):
            if await stack.dead_letters() == 1:
                break
            await asyncio.sleep(0.1)
        [(dead_id, fields)] = await stack.dead_entries()
        assert fields[b"dead_reason"].startswith(b"undecodable"), fields
        assert await resolve(redis.xlen(stack.layout.dead_stream(2))) == 1
        # stopped, so the replayed entry is not dead-lettered again before we look
        assert await asyncio.to_thread(stack.consumer.stop) == 0
        env = stack.ingest.env

        def dlq(*args: str) -> str:
            out = subprocess.run(
                [sys.executable, "-m", "consumer.dlq", *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            return out.stdout

        listing = await asyncio.to_thread(dlq, "list")
        assert f"2/{dead_id}" in listing, listing
        assert "replayed 1" in await asyncio.to_thread(dlq, "replay", "--all")
        assert await resolve(redis.xlen(stack.layout.dead_stream(2))) == 0
    finally:
        await redis.aclose()
    await stack.stop()


@pytest.mark.parametrize("backend", ["ndjson", "postgres"])
async def test_waited_bundles_stored_exactly_on_a_cluster(
    cluster_stack: StackFactory, backend: str
) -> None:
    stack = cluster_stack(backend)
    await stack.start()
    raws = posted_bundles()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:

        async def post(raw: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            async with session.post(f"{stack.url}/v1/events/ingest?wait=20", json=raw) as resp:
                return resp.status, await resp.json()

        answers = await asyncio.gather(*(post(raw) for raw in raws))
    for raw, (status, body) in zip(raws, answers, strict=True):
        assert status == 200, body
        assert body["stored"] == len(raw["events"]), body
    codes = await stack.stop()
    assert codes == {"ingest": 0, "consumer": 0}, codes
    store = create_store(stack.settings())
    await store.open()
    try:
        stored = [e.event_id async for e in store.iter_events()]
        assert sorted(stored) == sorted(e["event_id"] for raw in raws for e in raw["events"])
        for partition in range(stack.layout.partitions):
            assert (await store.verify_chain(partition)).ok
    finally:
        await store.close()
