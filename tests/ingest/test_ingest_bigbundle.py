"""Big bundles: limits, chunked validation, entries split and added all-or-nothing.

Against the session's test Redis (see tests/conftest.py) where the transaction matters, and a
private ``redis-server`` for the out-of-memory refusal.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from fakeredis import FakeAsyncRedis

from ingest.app import RUNTIME_KEY
from ingest.body import CHUNK_EVENTS
from ingest.entry import ChunkWriter, bundle_json, chunk_fields, event_json
from ingest.publisher import Publisher
from ingest.upload import describe_size
from storage.envelope import CHUNKED_VERSION, decode
from storage.queue import resolve
from storage.schema import Bundle
from tests.chaos.chaos_support import RedisServer
from tests.factories import body, event
from tests.ingest.ingest_support import (
    AUTH,
    LAYOUT,
    ClientFactory,
    client_for,
    make_settings,
    raw,
    stream_entries,
)
from webcore.errors import Unavailable

pytestmark = pytest.mark.integration
URL = "/v1/events/ingest"
ENTRY_MAX = 64 * 1024
GZ = {**AUTH, "Content-Encoding": "gzip"}


def big_body(n: int, bundle_id: str = "bootstrap-repo-a", **extra: Any) -> dict[str, Any]:
    events = [
        event(
            "file.discovered",
            {"target_id": "repo-a", "path": f"src/pkg_{i // 50}/mod_{i}.py", "size_bytes": i},
            event_id=f"file-{bundle_id}-{i}",
        )
        for i in range(n)
    ]
    return body("repo-a", bundle_id, events, **extra)


def test_sizes_are_described_in_the_docs_units() -> None:
    assert describe_size(64 * 1024 * 1024) == "64 MiB"
    assert describe_size(512 * 1024) == "512 KiB"
    assert describe_size(1000) == "1000 bytes"


async def test_413_names_the_limits_in_their_units(aiohttp_client: ClientFactory) -> None:
    redis = FakeAsyncRedis()
    settings = make_settings(max_body_bytes=512 * 1024, max_events=CHUNK_EVENTS * 2)
    client = await client_for(aiohttp_client, settings, redis)

    resp = await client.post(URL, data=raw(big_body(CHUNK_EVENTS * 2 + 1)), headers=AUTH)
    assert resp.status == 413
    detail = (await resp.json())["detail"]
    assert detail == f"Bundle has {CHUNK_EVENTS * 2 + 1} events; at most 2000 are accepted."

    padded = big_body(10, pad="x" * 600_000)
    resp = await client.post(URL, data=gzip.compress(raw(padded)), headers=GZ)
    assert resp.status == 413
    assert (await resp.json())["detail"] == "Decompressed body exceeds the limit of 512 KiB."
    resp = await client.post(URL, data=raw(padded), headers=AUTH)
    assert resp.status == 413
    assert (await resp.json())["detail"] == "Request body exceeds the limit of 512 KiB."
    assert await stream_entries(redis) == []


async def test_chunked_validation_reports_locations_in_the_whole_bundle(
    aiohttp_client: ClientFactory,
) -> None:
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(entry_max_bytes=ENTRY_MAX), redis)
    obj = big_body(CHUNK_EVENTS * 2 + 500)
    obj["events"][3]["timestamp"] = "yesterday"
    obj["events"][1700]["timestamp"] = "not a time"
    del obj["events"][2400]["event_id"]
    obj["events"][2401] = 7
    obj["target"] = ""

    resp = await client.post(URL, data=raw(obj), headers=AUTH)

    assert resp.status == 422
    answer = await resp.json()
    locs = [e["loc"] for e in answer["errors"]]
    assert locs == [
        ["target"],
        ["events", 3, "timestamp"],
        ["events", 1700, "timestamp"],
        ["events", 2400, "event_id"],
        ["events", 2401],
    ]
    assert answer["detail"] == "Bundle failed validation with 5 problems."
    assert await stream_entries(redis) == []


async def test_a_big_bundle_becomes_consecutive_chunk_entries(
    aiohttp_client: ClientFactory, redis_client: aioredis.Redis
) -> None:
    settings = make_settings(entry_max_bytes=ENTRY_MAX)
    client = await client_for(aiohttp_client, settings, redis_client)
    artifact = {"sha256": "ab" * 32, "kind": "log", "uri": "s3://b/k", "size": 3, "extra": 1}
    obj = big_body(CHUNK_EVENTS * 3 + 10, artifacts=[artifact])

    resp = await client.post(URL, data=gzip.compress(raw(obj)), headers=GZ)

    assert resp.status == 202
    assert await resp.json() == {
        "status": "accepted",
        "bundle_id": obj["bundle_id"],
        "ingested": len(obj["events"]),
    }
    found = await stream_entries(redis_client)
    partitions = {p for p, _ in found}
    assert partitions == {LAYOUT.partition_of(obj["bundle_id"])}
    assert len(found) > 3
    events: list[str] = []
    for index, (_, (entry_id, fields)) in enumerate(found):
        assert len(fields[b"bundle"]) <= ENTRY_MAX
        assert fields[b"v"] == str(CHUNKED_VERSION).encode()
        env = decode(entry_id.decode(), fields)
        assert (env.chunk, env.chunks) == (index, len(found))
        assert env.bundle.bundle_id == obj["bundle_id"]
        assert (env.bundle.artifacts is not None) == (index == 0)
        events += [e.event_id for e in env.bundle.events]
    assert events == [e["event_id"] for e in obj["events"]]


def test_one_chunk_is_byte_for_byte_the_bundle_json() -> None:
    obj = big_body(40, artifacts=[{"sha256": "ab", "kind": None, "extra": [1, 2]}])
    bundle = Bundle.model_validate(obj)
    writer = ChunkWriter(bundle, 1 << 20)
    for i, ev in enumerate(bundle.events):
        writer.add(event_json(ev, i))
    assert writer.finish() == [bundle_json(bundle)]
    # and a single chunk is written as a plain version 1 entry, as today
    (fields,) = chunk_fields(bundle.bundle_id, [bundle_json(bundle)], "tok", 1.5)
    assert set(fields) == {b"v", b"bundle", b"received_at", b"token"}
    assert decode("1-0", fields).bundle == bundle


def test_chunks_decode_to_the_slices_of_the_bundle() -> None:
    bundle = Bundle.model_validate(big_body(500))
    writer = ChunkWriter(bundle, ENTRY_MAX)
    for i, ev in enumerate(bundle.events):
        writer.add(event_json(ev, i))
    chunks = writer.finish()
    assert len(chunks) > 1
    decoded = [Bundle.model_validate_json(c) for c in chunks]
    assert [e for b in decoded for e in b.events] == bundle.events
    for chunk, part in zip(chunks, decoded, strict=True):
        assert chunk == bundle_json(part)


async def _publisher(redis: aioredis.Redis) -> Publisher:
    publisher = Publisher(redis, max_batch=16, timeout=1.0, retry_after=1)
    publisher.start()
    return publisher


async def test_a_transaction_that_fails_to_queue_adds_nothing(
    redis_client: aioredis.Redis,
) -> None:
    stream = LAYOUT.stream(0)
    publisher = await _publisher(redis_client)
    try:
        good = {b"v": b"2", b"bundle": b"{}"}
        # an XADD without fields is refused while queueing: Redis discards the transaction
        with pytest.raises(Unavailable):
            await publisher.publish_atomic(stream, [good, good, {}, good])
        assert await resolve(redis_client.xlen(stream)) == 0
        # the publisher's connection is still in step: the next transaction goes through
        ids = await publisher.publish_atomic(stream, [good, good])
        assert len(ids) == 2
        assert [i.decode() for i, _ in await resolve(redis_client.xrange(stream))] == ids
        # and so does a plain XADD in the same pipeline
        assert await publisher.publish(stream, good)
    finally:
        await publisher.stop()


async def test_redis_out_of_memory_is_a_503_and_queues_nothing(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        redis = aioredis.Redis.from_url(server.url)
        # the memory mark is sampled (here once, before maxmemory is set): between two
        # samples Redis itself may refuse, and that refusal must be a 503 as well
        settings = make_settings(
            redis_url=server.url, entry_max_bytes=ENTRY_MAX, lag_cache_seconds=60
        )
        client = await client_for(aiohttp_client, settings, redis)
        first = await client.post(URL, data=raw(big_body(1, bundle_id="oom-0")), headers=AUTH)
        assert first.status == 202
        used = int((await resolve(redis.info("memory")))["used_memory"])
        await resolve(redis.config_set("maxmemory", str(used + 256 * 1024)))
        await resolve(redis.config_set("maxmemory-policy", "noeviction"))
        statuses = [202]
        for i in range(1, 12):  # until Redis is full: each bundle is ~150 KiB of entries
            obj = big_body(CHUNK_EVENTS, bundle_id=f"oom-{i}")
            resp = await client.post(URL, data=raw(obj), headers=AUTH)
            statuses.append(resp.status)
            if resp.status == 503:
                answer = await resp.json()
                assert "out of memory" in answer["detail"]
                assert resp.headers["Retry-After"] == "1"
                break
        assert statuses[-1] == 503, statuses
        assert set(statuses[:-1]) <= {202}
        queued = {b for _, (_, f) in await stream_entries(redis) for b in [f[b"bundle"]]}
        bundle_ids = {orjson.loads(b)["bundle_id"] for b in queued}
        assert bundle_ids == {f"oom-{i}" for i in range(len(statuses) - 1)}
        await redis.aclose()
    finally:
        server.crash()


async def test_memory_high_water_mark_is_named_in_the_503(
    aiohttp_client: ClientFactory, redis_client: aioredis.Redis
) -> None:
    settings = make_settings(queue_high_water_bytes=1024 * 1024)
    client = await client_for(aiohttp_client, settings, redis_client)
    # any Redis server uses more than 1 MiB
    resp = await client.post(URL, data=raw(big_body(3)), headers=AUTH)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    detail = (await resp.json())["detail"]
    assert detail == "Redis memory use is over its high-water mark of 1 MiB; retry later."
    assert await stream_entries(redis_client) == []


async def test_a_wait_holds_the_budget_only_until_queued(
    aiohttp_client: ClientFactory, redis_client: aioredis.Redis
) -> None:
    """A ``?wait=`` that times out has given its budget back long before."""
    settings = make_settings(entry_max_bytes=ENTRY_MAX)
    client = await client_for(aiohttp_client, settings, redis_client)
    rt = client.app[RUNTIME_KEY]
    task = asyncio.create_task(
        client.post(URL + "?wait=1", data=raw(big_body(CHUNK_EVENTS * 2)), headers=AUTH)
    )
    for _ in range(500):
        if await resolve(redis_client.exists(*LAYOUT.streams())):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert rt.budget.used == 0  # queued, now waiting for a consumer that never comes
    resp = await task
    assert resp.status == 202
