"""The query tier as its own process, and ingest with the read API turned off.

``leviathan-cp query`` answers the read API, the console and /openapi.json from storage and
refuses every write (the ingest endpoint and the operator write endpoints are no routes
there); ``leviathan-cp ingest`` with ``LEVIATHAN_INGEST_SERVE_READS=false`` answers writes
only. Real processes, real Redis, a seeded NDJSON store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from leviathan_cp.ports import free_port
from storage.config import StorageSettings, create_store
from tests.ingest.ingest_support import bundle_body, raw
from tests.query.query_support import LAYOUT, seed

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "query-process-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(redis_url: str, data: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVIATHAN_")}
    env.update(
        LEVIATHAN_CONTROL_PLANE_TOKEN=TOKEN,
        LEVIATHAN_REDIS_URL=redis_url,
        LEVIATHAN_API_HOST="127.0.0.1",
        LEVIATHAN_API_PORT=str(port),
        LEVIATHAN_STREAM_PREFIX=LAYOUT.prefix,
        LEVIATHAN_PARTITIONS=str(LAYOUT.partitions),
        LEVIATHAN_CONTROL_PLANE_BACKEND="ndjson",
        LEVIATHAN_NDJSON_DIR=str(data),
        LEVIATHAN_DRAIN_SECONDS="0",
        **extra,
    )
    return env


async def _seeded(tmp_path: Path) -> Path:
    data = tmp_path / "log"
    store = create_store(
        StorageSettings(backend="ndjson", ndjson_dir=data, partitions=LAYOUT.partitions)
    )
    await store.open()
    try:
        await seed(store)
    finally:
        await store.close()
    return data


def _spawn(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "leviathan_cp", command],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _text(log: Path) -> str:
    return log.read_text()


async def _serve(command: str, env: dict[str, str], log: Path) -> AsyncIterator[str]:
    port = env["LEVIATHAN_API_PORT"]
    proc = _spawn(command, env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                assert proc.poll() is None, _text(log)
                try:
                    async with session.get(f"{base}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"{command} not ready:\n{_text(log)}")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, _text(log)


@pytest.fixture
async def query_url(tmp_path: Path, redis_url: str) -> AsyncIterator[str]:
    data = await _seeded(tmp_path)
    env = _env(redis_url, data, free_port())
    async for base in _serve("query", env, tmp_path / "query.log"):
        yield base


async def test_query_tier_answers_reads_and_the_console(query_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{query_url}/v1/graph/summary", headers=AUTH) as r:
            assert r.status == 200
            summary = await r.json()
            assert summary["total_nodes"] > 0
        async with session.get(f"{query_url}/v1/attempts?limit=2", headers=AUTH) as r:
            assert r.status == 200
            assert len((await r.json())["attempts"]) == 2
        async with session.get(f"{query_url}/v1/stats", headers=AUTH) as r:
            assert r.status == 200
        async with session.get(f"{query_url}/v1/attempts") as r:
            assert r.status == 401  # the same bearer tokens as ingest
        async with session.get(f"{query_url}/console") as r:
            assert r.status == 200
            assert "text/html" in r.headers["Content-Type"]
        async with session.get(f"{query_url}/openapi.json") as r:
            assert "/v1/events/ingest" in (await r.json())["paths"]  # one document, both tiers
        async with session.get(f"{query_url}/metrics") as r:
            text = await r.text()
            assert 'query_requests_total{route="/v1/graph/summary",status="200"} 1.0' in text
            assert "query_storage_open 1.0" in text


async def test_query_tier_refuses_every_write(query_url: str) -> None:
    body = raw(bundle_body("refused-by-query", n=1))
    async with aiohttp.ClientSession() as session:
        for path, data in (
            ("/v1/events/ingest", body),
            ("/v1/attempts/att-1/invalidate", b'{"reason": "x"}'),
            ("/v1/backlog/suggest", b'{"target": "repo"}'),
        ):
            async with session.post(f"{query_url}{path}", data=data, headers=AUTH) as r:
                assert r.status in (404, 405), (path, r.status)
                assert "detail" in await r.json()


async def test_ingest_without_reads_serves_writes_only(tmp_path: Path, redis_url: str) -> None:
    data = await _seeded(tmp_path)
    env = _env(redis_url, data, free_port(), LEVIATHAN_INGEST_SERVE_READS="false")
    async for base in _serve("ingest", env, tmp_path / "ingest.log"):
        async with aiohttp.ClientSession() as session:
            body = raw(bundle_body("writes-only", n=2))
            headers = {**AUTH, "Content-Type": "application/json"}
            async with session.post(f"{base}/v1/events/ingest", data=body, headers=headers) as r:
                assert r.status == 202
            async with session.post(
                f"{base}/v1/attempts/att-1/invalidate", json={"reason": "bad"}, headers=AUTH
            ) as r:
                assert r.status == 202  # operator writes stay with ingest
            for path in ("/v1/attempts", "/v1/graph/summary", "/console", "/openapi.json"):
                async with session.get(f"{base}{path}", headers=AUTH) as r:
                    assert r.status == 404, (path, r.status)
