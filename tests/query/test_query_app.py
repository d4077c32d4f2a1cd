"""The query API inside the real ingest app (``leviathan_cp.tiers.ingest_app``): auth, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from ingest.app import HANDLER_ARGS
from leviathan_cp.tiers import ingest_app
from storage.config import create_store
from storage.envelope import decode
from storage.queue import resolve
from tests.ingest.ingest_support import AUTH, LAYOUT, ClientFactory, make_settings
from tests.query.query_support import seed

pytestmark = pytest.mark.integration


async def test_query_routes_in_the_ingest_app(
    tmp_path: Path, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    settings = make_settings(ndjson_dir=tmp_path / "log", redis_url=redis_url)
    store = create_store(settings)
    await store.open()
    await seed(store)
    await store.close()
    redis = aioredis.Redis.from_url(redis_url)
    server = TestServer(ingest_app(settings, redis=redis))
    await server.start_server(**HANDLER_ARGS)
    client: TestClient = await aiohttp_client(server)  # type: ignore[type-arg]

    assert (await client.get("/v1/attempts")).status == 401
    ok = await client.get("/v1/attempts?limit=2", headers=AUTH)
    assert ok.status == 200
    assert (await ok.json())["count"] == 2
    bad = await client.get("/v1/attempts?limit=0", headers=AUTH)
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["loc"] == ["query", "limit"]
    missing = await client.get("/v1/tasks/nope", headers=AUTH)
    assert missing.status == 404
    assert "nope" in (await missing.json())["detail"]
    stats = await client.get("/v1/stats", headers=AUTH)
    assert stats.status == 200
    assert len((await stats.json())["partitions"]) == LAYOUT.partitions

    resp = await client.post(
        "/v1/attempts/att-3/invalidate", json={"reason": "reverted"}, headers=AUTH
    )
    assert resp.status == 202, await resp.text()
    stream = LAYOUT.stream(LAYOUT.partition_of("bundle-att-3"))
    [(entry_id, fields)] = await resolve(redis.xrange(stream))
    env = decode(entry_id.decode(), fields)
    assert env.bundle.events[0].event_type == "attempt.invalidated"
    assert env.bundle.target == "other-repo"
