"""The ingest tier when its read side's storage is unreachable: intake goes on, reads 503.

The store backs only the query API; bundles go to Redis. Storage down at start must not
stop the tier (it opens in the background, retrying), and a read while it is down is a 503
with Retry-After, never a 500.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.ingest.ingest_support import (
    AUTH,
    ClientFactory,
    bundle_body,
    client_for,
    make_settings,
    raw,
)

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/none"


async def test_reads_are_503_while_intake_goes_on(aiohttp_client: ClientFactory) -> None:
    settings = make_settings(backend="postgres", postgres_dsn=UNREACHABLE, retry_after_seconds=7)
    client = await client_for(aiohttp_client, settings)
    accepted = await client.post("/v1/events/ingest", data=raw(bundle_body()), headers=AUTH)
    assert accepted.status == 202
    for path in ("/v1/graph/summary", "/v1/attempts", "/v1/events/recent"):
        resp = await client.get(path, headers=AUTH)
        assert resp.status == 503, path
        assert resp.headers["Retry-After"] == "7"
        assert await resp.json() == {"detail": "Storage is unavailable; retry later.", "errors": []}
    ready = await client.get("/readyz")  # readiness is about intake: Redis and the publisher
    assert ready.status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'ingest_rejections_total{reason="storage"} 3.0' in metrics


async def test_store_opened_in_the_background_once_it_can_be(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the NDJSON directory should be")
    client = await client_for(aiohttp_client, make_settings(ndjson_dir=blocker))
    assert (await client.get("/v1/graph/summary", headers=AUTH)).status == 503
    blocker.unlink()  # the directory can be made now; the next retry (after ~1 s) opens it
    status = 503
    for _ in range(100):
        status = (await client.get("/v1/graph/summary", headers=AUTH)).status
        if status != 503:
            break
        await asyncio.sleep(0.1)
    assert status == 200
