"""Helpers for the ingest-tier tests: settings, an app client over fakeredis, bodies."""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fakeredis import FakeAsyncRedis
from redis.asyncio import Redis

from ingest.app import HANDLER_ARGS
from ingest.settings import IngestSettings
from leviathan_cp.tiers import ingest_app
from storage.queue import StreamLayout, resolve
from tests.factories import body, event

TOKEN = "secret-token-a"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
PARTITIONS = 4
LAYOUT = StreamLayout(partitions=PARTITIONS)

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def make_settings(**overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "token": TOKEN,
        "partitions": PARTITIONS,
        "drain_seconds": 0,
        "lag_cache_seconds": 0,
        "redis_timeout_seconds": 1.0,
    }
    values.update(overrides)
    return IngestSettings(**values)


async def client_for(
    aiohttp_client: ClientFactory, settings: IngestSettings, redis: Redis | None = None
) -> TestClient[web.Request, web.Application]:
    app = ingest_app(settings, redis=redis if redis is not None else FakeAsyncRedis())
    # TestServer drops constructor kwargs; start it here so the handler gets HANDLER_ARGS
    # (raw gzip bodies), exactly as ``python -m ingest`` serves the app.
    server = TestServer(app)
    await server.start_server(**HANDLER_ARGS)
    return await aiohttp_client(server)


def bundle_body(bundle_id: str = "bundle-att-1", n: int = 2, **extra: Any) -> dict[str, Any]:
    events = [event("attempt.progress", {"attempt_id": "att-1", "i": i}) for i in range(n)]
    return body("repo-a", bundle_id, events, **extra)


def raw(obj: Any) -> bytes:
    return orjson.dumps(obj)


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


async def stream_entries(redis: Redis, layout: StreamLayout = LAYOUT) -> list[tuple[int, Any]]:
    """Every (partition, entry) in every partition stream."""
    found: list[tuple[int, Any]] = []
    for p in range(layout.partitions):
        for entry in await resolve(redis.xrange(layout.stream(p))):
            found.append((p, entry))
    return found
