"""The consumer under big bundles: byte-bounded batches, chunked bundles stored whole and
answered to ``?wait=``, and a lag metric that does not trust inconsistent counters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio import Redis

from consumer import maintenance
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, ensure_group
from ingest.settings import IngestSettings
from storage.base import EventStore
from storage.config import create_store
from storage.queue import GROUP, StreamLayout, resolve
from tests.consumer.conftest import make_settings
from tests.factories import body, event
from tests.ingest.ingest_support import ClientFactory, client_for

ENTRY_MAX = 64 * 1024


async def _add_raw(redis: Redis, stream: str, sizes: list[int]) -> list[str]:
    ids = []
    for i, size in enumerate(sizes):
        fields: Any = {b"v": b"1", b"bundle": b"x" * size, b"n": str(i).encode()}
        ids.append((await resolve(redis.xadd(stream, fields))).decode())
    return ids


async def test_a_batch_of_large_entries_stays_within_its_byte_bound(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, partitions=1, batch=50, batch_bytes=300_000, entry_max_bytes=100_000
    )
    reader = Reader(fake_redis, ndjson_store, settings, ConsumerMetrics())
    await ensure_group(fake_redis, reader.layout)
    stream = reader.layout.stream(0)
    ids = await _add_raw(fake_redis, stream, [95_000] * 10)

    seen: list[str] = []
    while batch := await reader.read_once(0):
        assert sum(len(f[b"bundle"]) for _, f in batch) <= 300_000
        assert len(batch) == 3 or len(seen) == 9
        seen += [i for i, _ in batch]
    assert seen == ids

    # re-reading our own pending list (after a restart) goes one entry at a time
    pending = await reader.read_pending(0)
    assert pending is not None
    assert pending[0] == ids[0]


async def test_the_byte_bound_is_shared_by_the_partitions(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    """Every partition reader holds a batch at once: each gets its share of the bound."""
    settings = make_settings(
        tmp_path, partitions=2, batch=50, batch_bytes=600_000, entry_max_bytes=100_000
    )
    reader = Reader(fake_redis, ndjson_store, settings, ConsumerMetrics())
    await ensure_group(fake_redis, reader.layout)
    for partition in (0, 1):
        await _add_raw(fake_redis, reader.layout.stream(partition), [95_000] * 5)
    batches = [await reader.read_once(p) for p in (0, 1)]
    assert [len(b) for b in batches] == [3, 3]


async def test_small_entries_still_fill_a_batch(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, partitions=1, batch=50, batch_bytes=1_000_000, entry_max_bytes=100_000
    )
    reader = Reader(fake_redis, ndjson_store, settings, ConsumerMetrics())
    await ensure_group(fake_redis, reader.layout)
    ids = await _add_raw(fake_redis, reader.layout.stream(0), [1_000] * 60)
    first = await reader.read_once(0)
    assert [i for i, _ in first] == ids[:50]
    assert [i for i, _ in await reader.read_once(0)] == ids[50:]


async def test_record_lag_ignores_a_phantom_counter(
    redis_client: aioredis.Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, partitions=1)
    metrics = ConsumerMetrics()
    reader = Reader(redis_client, ndjson_store, settings, metrics)
    await ensure_group(redis_client, reader.layout)
    stream = reader.layout.stream(0)
    ids = await _add_raw(redis_client, stream, [10] * 3)
    await resolve(redis_client.xreadgroup(GROUP, "c1", {stream: ">"}, count=10))
    await resolve(redis_client.xack(stream, GROUP, *ids))
    await resolve(redis_client.xtrim(stream, maxlen=0, approximate=False))
    await resolve(
        redis_client.execute_command(  # type: ignore[no-untyped-call]
            "XSETID", stream, ids[-1], "ENTRIESADDED", 40
        )
    )
    row = await maintenance.group_info(redis_client, stream)
    assert row is not None
    assert row["lag"] not in (0, None)  # what Redis claims

    await maintenance.record_lag(reader, metrics)
    assert metrics.lag.labels("0")._value.get() == 0


def _bootstrap(n: int) -> dict[str, Any]:
    events = [
        event(
            "file.discovered",
            {"target_id": "repo-b", "path": f"src/mod_{i}.py", "language": "python"},
            event_id=f"file-repo-b-{i}",
        )
        for i in range(n)
    ]
    return body("repo-b", "bootstrap-repo-b", events)


@pytest.mark.integration
async def test_a_chunked_bundle_is_stored_whole_and_answered_to_wait(
    redis_client: aioredis.Redis, redis_url: str, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    """ingest (real app) → several entries → a real consumer Reader → NDJSON → 200."""
    layout = StreamLayout(partitions=2)
    consumer_settings = make_settings(
        tmp_path, partitions=2, batch_bytes=200_000, entry_max_bytes=ENTRY_MAX
    )
    store = create_store(consumer_settings)
    reader = Reader(redis_client, store, consumer_settings, ConsumerMetrics())
    running = asyncio.create_task(reader.run())
    ingest_settings = IngestSettings(
        token="tok",
        partitions=2,
        entry_max_bytes=ENTRY_MAX,
        lag_cache_seconds=0,
        ndjson_dir=tmp_path / "data",
    )
    client = await client_for(aiohttp_client, ingest_settings, aioredis.Redis.from_url(redis_url))
    raw = _bootstrap(2_500)
    try:
        resp = await client.post(
            "/v1/events/ingest?wait=20", json=raw, headers={"Authorization": "Bearer tok"}
        )
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        assert answer["status"] == "ok"
        # the counts of every chunk, summed
        assert (answer["ingested"], answer["stored"], answer["dead_lettered"]) == (2_500, 2_500, 0)
        stream = layout.stream(layout.partition_of(raw["bundle_id"]))
        assert await resolve(redis_client.xlen(stream)) > 3  # it was split
        assert await store.count_events() == 2_500
    finally:
        reader.stop()
        await asyncio.wait_for(running, 10)
    await store.close()
