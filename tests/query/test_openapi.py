"""The OpenAPI 3.1 document: valid, complete, and honoured by the running app (schemathesis).

The app runs on a real port in its own thread and event loop because schemathesis calls it
synchronously (requests); each API operation gets a bounded number of generated cases.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from pytest_aiohttp import AiohttpClient
from schemathesis import checks
from schemathesis.generation.case import Case

from leviathan_cp.ports import free_port
from query.openapi import build_document
from storage.config import StorageSettings, create_store
from tests.query.query_support import AUTH, PARTITIONS, query_app, seed

DOCUMENT = build_document(PARTITIONS)
# Served by the ingest engineer's create_app (ingest/app.py), not by the query app here.
NOT_MOUNTED = ["/healthz", "/readyz", "/metrics", "/v1/events/ingest"]
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path=NOT_MOUNTED)


def test_document_is_valid_openapi_31() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"] == "3.1.0"
    assert DOCUMENT["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    expected = {"/healthz", "/readyz", "/metrics", "/v1/events/ingest", "/v1/stats",
                "/v1/attempts/{attempt_id}/invalidate", "/v1/events/verify",
                "/v1/topology/summary", "/v1/topology/areas", "/v1/topology/subsystems",
                "/v1/topology/dependencies", "/v1/autonomy/status",
                "/v1/backlog/suggest"}  # fmt: skip
    assert expected <= set(DOCUMENT["paths"])
    assert DOCUMENT["paths"]["/healthz"]["get"]["security"] == []


async def test_document_is_served_without_auth(
    tmp_path: Path, redis_url: str, aiohttp_client: AiohttpClient
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        app = query_app(StorageSettings(backend="ndjson", ndjson_dir=tmp_path), client)
        http = await aiohttp_client(app)
        resp = await http.get("/openapi.json")
        assert resp.status == 200
        assert await resp.json() == DOCUMENT
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, test_redis_base: str) -> Iterator[str]:
    """A seeded NDJSON-backed app served on a real port from a background thread."""
    port = free_port()
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = loop.create_future()
    settings_ = StorageSettings(backend="ndjson", ndjson_dir=tmp_path_factory.mktemp("oa"))

    async def serve() -> None:
        store = create_store(settings_)
        await store.open()
        await seed(store)
        await store.close()
        client = aioredis.Redis.from_url(test_redis_base)
        runner = web.AppRunner(query_app(settings_, client))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        started.set()
        await stop
        await runner.cleanup()
        await client.aclose()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30), "query app did not start"
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(stop.set_result, None)
    thread.join(30)
    loop.close()


@pytest.mark.integration
@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_honours_its_document(case: Case[Any], base_url: str) -> None:
    """No 5xx, declared status codes, conforming bodies/headers, auth enforced.

    Two generic checks are left out on purpose: cursors are opaque server-issued tokens,
    so a schema-valid random ``cursor``/``after`` is rightly a 422 (positive_data_acceptance
    would call that a failure); unknown query parameters are ignored as in any HTTP API
    (negative_data_rejection wants them rejected). Bad *declared* parameters are covered
    by the 422 tests in test_query.py.
    """
    case.call_and_validate(
        base_url=base_url,
        headers=AUTH,
        excluded_checks=[checks.positive_data_acceptance, checks.negative_data_rejection],
    )
