"""Fixtures for the query API tests: a store per backend, seeded data, an app over it.

``ingest.app`` (the ingest engineer's create_app with auth, errors and the publisher) is
used when it exposes what these tests need; until then the app here mounts the query
routes with the same store cleanup_ctx and a publisher that XADDs the envelope exactly as
the ingest path encodes it (``ingest.entry.entry_fields`` into the bundle's partition).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler

from ingest.backlog import handle_backlog_suggest
from ingest.deps import WRITE_DEPS_KEY, Publish, WriteDeps
from ingest.entry import entry_fields
from ingest.invalidate import handle_invalidate
from ingest.metrics import IngestMetrics
from query.app import mount
from query.deps import QueryDeps
from storage.base import EventStore
from storage.config import StorageSettings, create_store
from storage.queue import StreamLayout, resolve
from storage.schema import Bundle
from tests.factories import attempt_lifecycle, bootstrap_burst, envelope, tasks_with_dependencies
from webcore.auth import token_label
from webcore.errors import Unauthorized
from webcore.middlewares import TOKEN_LABEL, error_middleware
from webcore.store_ctx import store_ctx

PARTITIONS = 4
LAYOUT = StreamLayout(partitions=PARTITIONS)


def settings_for(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> StorageSettings:
    if backend == "postgres":
        dsn: str = request.getfixturevalue("postgres_url")
        return StorageSettings(backend="postgres", postgres_dsn=dsn, partitions=PARTITIONS)
    return StorageSettings(backend="ndjson", ndjson_dir=tmp_path / "log", partitions=PARTITIONS)


def seed_bodies() -> list[dict[str, Any]]:
    """A bootstrap burst, three attempts (two succeeded, one failed), tasks with deps."""
    return [
        bootstrap_burst(8),  # 10 events, so the summary's last-20 cap is reached
        tasks_with_dependencies(),
        attempt_lifecycle("att-1", "task-docs-1", start=0),
        attempt_lifecycle("att-2", "task-tests-2", outcome="failed", start=400),
        attempt_lifecycle("att-3", "task-other", target="other-repo", start=800, pr_number=7),
    ]


async def seed(store: EventStore) -> None:
    for n, raw in enumerate(seed_bodies(), start=1):
        partition = LAYOUT.partition_of(raw["bundle_id"])
        await store.write_batch(partition, [envelope(raw, entry_id=f"{n}-0")])


TOKEN = "query-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPEN_PATHS = frozenset({"/openapi.json", "/healthz", "/readyz", "/metrics"})


@web.middleware
async def bearer_stand_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stand-in for webcore.middlewares.auth_middleware, which does not yet exempt /openapi.json."""
    if (
        request.path not in OPEN_PATHS
        and request.headers.get("Authorization") != AUTH["Authorization"]
    ):
        raise Unauthorized("A valid bearer token is required.")
    request[TOKEN_LABEL] = token_label(TOKEN)
    return await handler(request)


def bundle_publisher(redis: aioredis.Redis) -> Publish:
    """Encode a bundle as the ingest path does and XADD it to its partition's stream."""

    async def send(bundle: Bundle, token_label: str) -> str:
        stream = LAYOUT.stream(LAYOUT.partition_of(bundle.bundle_id))
        entry = await resolve(redis.xadd(stream, entry_fields(bundle, token_label)))  # type: ignore[arg-type]
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    return send


def query_app(settings: StorageSettings, redis: aioredis.Redis) -> web.Application:

    app = web.Application(middlewares=[error_middleware(IngestMetrics()), bearer_stand_in])
    mount(app, QueryDeps(layout=LAYOUT, redis=lambda: redis))
    app[WRITE_DEPS_KEY] = WriteDeps(publish=bundle_publisher(redis))
    app.cleanup_ctx.append(store_ctx(settings))
    # the operator write endpoints are ingest's; the read tests drive them beside the reads
    app.add_routes(
        [
            web.post("/v1/attempts/{attempt_id}/invalidate", handle_invalidate),
            web.post("/v1/backlog/suggest", handle_backlog_suggest),
        ]
    )
    return app


AppFactory = Callable[[], web.Application]


@pytest.fixture(name="backend_settings", params=["ndjson", "postgres"])
def backend_settings_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSettings:
    return settings_for(str(request.param), tmp_path, request)


@pytest.fixture(name="seeded")
async def seeded_fixture(backend_settings: StorageSettings) -> StorageSettings:
    store = create_store(backend_settings)
    await store.open()
    try:
        await seed(store)
    finally:
        await store.close()
    return backend_settings


@pytest.fixture(name="redis")
def redis_fixture(redis_client: aioredis.Redis) -> aioredis.Redis:
    """The shared ``redis_client`` (tests/conftest.py) under the name these tests use."""
    return redis_client


@pytest.fixture(name="make_app")
def make_app_fixture(seeded: StorageSettings, redis: aioredis.Redis) -> AppFactory:
    """A new app over the same storage on every call (a restart of the ingest tier)."""
    return lambda: query_app(seeded, redis)
