"""The export cursor under load: a client pages ``GET /v1/events?after=`` without pause
while two consumer processes write every partition, then the events it saw are compared
with the events stored: the same set, none twice (NDJSON and PostgreSQL).

Bundles are XADDed straight to the partition streams in waves (as ingest's group commit
would), so both consumers hold batches of different partitions at once and commit them in
whatever order they finish.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from consumer.settings import ConsumerSettings
from leviathan_cp.ports import free_port
from storage.config import create_store
from tests import factories as f
from tests.consumer.process_support import (
    ROOT,
    backlog,
    consumer_env,
    prefill,
    start_consumer,
    wait_for,
)
from tests.e2e.conftest import TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAVES = 25
PER_WAVE = 24


async def _up(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def test_a_client_paging_during_writes_sees_every_event_once(
    settings: ConsumerSettings, redis_url: str, tmp_path: Path
) -> None:
    base = consumer_env(settings, redis_url)
    consumers = [
        start_consumer(
            {**base, "HOSTNAME": f"writer-{k}", "LEVIATHAN_CONSUMER_PORT": str(free_port())},
            tmp_path / f"consumer-{k}.log",
        )
        for k in range(2)
    ]
    api_port = free_port()
    api_env = {**base, "LEVIATHAN_CONTROL_PLANE_TOKEN": TOKEN,
               "LEVIATHAN_API_HOST": "127.0.0.1", "LEVIATHAN_API_PORT": str(api_port)}  # fmt: skip
    ingest = _start_ingest(api_env, tmp_path / "ingest.log")
    api = f"http://127.0.0.1:{api_port}"
    redis = Redis.from_url(redis_url)
    layout = settings.layout
    try:
        await wait_for(lambda: _up(f"{api}/readyz"), 60, "ingest readiness")
        writing = True

        async def write() -> None:
            nonlocal writing
            for wave in range(WAVES):
                raws = [f.attempt_lifecycle(f"w{wave}-{i}", f"task-{i % 9}", start=wave)
                        for i in range(PER_WAVE)]  # fmt: skip
                await prefill(redis, layout, raws)
                await asyncio.sleep(0.05)
            await wait_for(lambda: _drained(redis, layout), 120, "the consumers to drain")
            writing = False

        async def page(session: aiohttp.ClientSession) -> list[tuple[str, int]]:
            seen: list[tuple[str, int]] = []
            after: str | None = None
            while True:
                done = not writing  # read before the page: an empty page after it ends
                params = {"limit": "37", **({"after": after} if after else {})}
                async with session.get(f"{api}/v1/events", params=params) as resp:
                    assert resp.status == 200, await resp.text()
                    body: dict[str, Any] = await resp.json()
                seen += [(e["event_id"], e["revision"]) for e in body["events"]]
                assert body["next_cursor"], body
                after = body["next_cursor"]
                if done and not body["events"]:
                    return seen

        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            writer = asyncio.create_task(write())
            seen = await page(session)
            await writer
        store = create_store(settings)
        await store.open()
        try:
            stored = [(e.event_id, e.revision) async for e in store.iter_events()]
        finally:
            await store.close()
        assert len(stored) == WAVES * PER_WAVE * len(f.attempt_lifecycle("x", "t")["events"])
        assert len(seen) == len(set(seen)), "an event came twice"
        assert set(seen) == set(stored)
    finally:
        await redis.aclose()
        for proc in (ingest, *consumers):
            proc.send_signal(signal.SIGTERM)
        for proc in (ingest, *consumers):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _start_ingest(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "leviathan_cp", "ingest"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )


async def _drained(redis: Redis, layout: Any) -> bool:
    return await backlog(redis, layout) == 0
