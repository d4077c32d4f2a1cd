"""End to end: real ``python -m ingest`` and ``python -m consumer`` processes.

Factory bundles are POSTed with ``?wait=``; each answer must be 200 (persisted), and the
stored events must equal the posted ones, on NDJSON and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consumer.settings import ConsumerSettings
from storage.config import create_store
from storage.schema import Bundle
from tests import factories as f
from tests.consumer.conftest import make_settings
from tests.consumer.process_support import (
    ROOT,
    consumer_env,
    free_port,
    start_consumer,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN = "e2e-token-0123456789"


@pytest.fixture(params=["ndjson", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> ConsumerSettings:
    if importlib.util.find_spec("ingest.__main__") is None:
        pytest.skip("ingest/__main__.py has not landed yet")
    extra: dict[str, Any] = {"backend": request.param, "partitions": 4}
    if request.param == "postgres":
        extra["postgres_dsn"] = request.getfixturevalue("postgres_url")
    return make_settings(tmp_path, consumer_name="e2e", **extra)


@pytest.fixture
def processes(
    settings: ConsumerSettings, redis_url: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """(ingest base URL, consumer base URL) of two running processes."""
    env = consumer_env(settings, redis_url)
    api_port = free_port()
    ingest_env = {
        **env,
        "LEVIATHAN_CONTROL_PLANE_TOKEN": TOKEN,
        "LEVIATHAN_API_HOST": "127.0.0.1",
        "LEVIATHAN_API_PORT": str(api_port),
    }
    with (tmp_path / "ingest.log").open("ab") as log:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "ingest"], cwd=ROOT, env=ingest_env, stdout=log, stderr=log
        )
    consumer = start_consumer(env, tmp_path / "consumer.log")
    try:
        yield (
            f"http://127.0.0.1:{api_port}",
            f"http://127.0.0.1:{env['LEVIATHAN_CONSUMER_PORT']}",
        )
    finally:
        for proc in (ingest, consumer):
            proc.send_signal(signal.SIGTERM)
        for proc in (ingest, consumer):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs = {
            n: (tmp_path / f"{n}.log").read_text(errors="replace")[-2000:]
            for n in ("ingest", "consumer")
        }
        assert consumer.returncode == 0, logs["consumer"]


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
