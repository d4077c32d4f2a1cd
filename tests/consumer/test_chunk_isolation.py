"""A chunk entry with one event storage refuses: the chunk's other events are stored, only
that event is dead-lettered (with its bundle, chunk and index), ``?wait=`` counts both, and
``leviathan-cp dlq replay`` re-queues just that event.

Real path on both backends: the ingest app splits the bundle into chunk entries on a real
Redis, a running consumer Reader writes them. The refusal is the backend's own: a CHECK
constraint on PostgreSQL, a trigger in the NDJSON store's SQLite index (both raise an
integrity error, which the stores report as StorageDataError); "fixing the cause" drops it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from consumer import deadletter, dlq
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader
from consumer.settings import ConsumerSettings
from ingest.settings import IngestSettings
from storage.base import EventStore
from storage.config import create_store
from storage.queue import resolve
from tests.consumer.conftest import SettingsFactory
from tests.factories import body, event
from tests.ingest.ingest_support import ClientFactory, client_for

pytestmark = pytest.mark.integration

ENTRY_MAX = 64 * 1024
EVENTS = 900
POISON_AT = 700
POISON = "test.poison"


async def _pg(settings: ConsumerSettings, sql: str) -> None:
    assert settings.postgres_dsn is not None
    con = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        await con.execute(sql)
    finally:
        await con.close()


def _sqlite(settings: ConsumerSettings, sql: str) -> None:
    db = sqlite3.connect(settings.ndjson_dir / "index.sqlite3")
    try:
        db.execute(sql)
        db.commit()
    finally:
        db.close()


async def _refuse(settings: ConsumerSettings) -> None:
    """Make the backend refuse events of type POISON."""
    if settings.backend == "postgres":
        await _pg(
            settings,
            f"ALTER TABLE events ADD CONSTRAINT lvt_poison CHECK (event_type <> '{POISON}')",
        )
        return
    _sqlite(
        settings,
        f"CREATE TRIGGER lvt_poison BEFORE INSERT ON events WHEN NEW.event_type = '{POISON}' "
        "BEGIN SELECT RAISE(ABORT, 'poison event (test)'); END",
    )


async def _fix(settings: ConsumerSettings) -> None:
    if settings.backend == "postgres":
        await _pg(settings, "ALTER TABLE events DROP CONSTRAINT lvt_poison")
    else:
        _sqlite(settings, "DROP TRIGGER lvt_poison")


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(400):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _bundle() -> dict[str, Any]:
    events = [
        event(
            POISON if i == POISON_AT else "file.discovered",
            {"target_id": "repo-c", "path": f"src/mod_{i}.py", "language": "python"},
            event_id=f"file-repo-c-{i}",
        )
        for i in range(EVENTS)
    ]
    return body("repo-c", "bootstrap-repo-c", events)


async def test_one_refused_event_of_a_chunk_is_dead_lettered_alone_and_replayable(
    redis_client: aioredis.Redis,
    redis_url: str,
    aiohttp_client: ClientFactory,
    backend_settings: SettingsFactory,
) -> None:
    settings = backend_settings(partitions=2, batch_bytes=400_000, entry_max_bytes=ENTRY_MAX)
    layout = settings.layout
    store: EventStore = create_store(settings)
    await store.open()
    await _refuse(settings)
    reader = Reader(redis_client, store, settings, ConsumerMetrics())
    running = asyncio.create_task(reader.run())
    backend: dict[str, Any] = {"backend": settings.backend}
    if settings.postgres_dsn is not None:
        backend["postgres_dsn"] = settings.postgres_dsn.get_secret_value()
    else:
        backend["ndjson_dir"] = settings.ndjson_dir
    ingest = IngestSettings(
        token="tok", partitions=2, entry_max_bytes=ENTRY_MAX, lag_cache_seconds=0, **backend
    )
    client = await client_for(aiohttp_client, ingest, aioredis.Redis.from_url(redis_url))
    raw = _bundle()
    partition = layout.partition_of(raw["bundle_id"])
    dead_stream = layout.dead_stream(partition)
    try:
        resp = await client.post(
            "/v1/events/ingest?wait=20", json=raw, headers={"Authorization": "Bearer tok"}
        )
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        # honest counts: every other event stored, exactly the refused one dead-lettered
        assert answer["status"] == "partial"
        assert (answer["ingested"], answer["stored"], answer["dead_lettered"]) == (
            EVENTS,
            EVENTS - 1,
            1,
        )
        assert await store.count_events() == EVENTS - 1
        entries = await resolve(redis_client.xrange(layout.stream(partition)))
        assert len(entries) > 2  # it was split into chunks

        (dead_id, letter), *others = await resolve(redis_client.xrange(dead_stream))
        assert others == []
        assert letter[deadletter.BUNDLE_ID] == b"bootstrap-repo-c"
        assert letter[deadletter.EVENT_ID] == f"file-repo-c-{POISON_AT}".encode()
        assert letter[deadletter.REASON].startswith(b"unstorable: StorageDataError:")
        # the chunk and index name the event in its original entry
        source = letter[deadletter.ENTRY_ID].decode()
        [(_, chunk_fields)] = await resolve(
            redis_client.xrange(layout.stream(partition), min=source, max=source)
        )
        chunk, chunks = int(chunk_fields[b"chunk"]), int(chunk_fields[b"chunks"])
        assert letter[deadletter.CHUNK] == f"{chunk}/{chunks}".encode()
        index = int(letter[deadletter.EVENT])
        chunk_events = orjson.loads(chunk_fields[b"bundle"])["events"]
        assert chunk_events[index]["event_id"] == f"file-repo-c-{POISON_AT}"
        assert len(chunk_events) > 100  # the innocent events of that chunk were stored
        # the letter holds just that event, as a replayable chunk entry
        assert [e["event_id"] for e in orjson.loads(letter[b"bundle"])["events"]] == [
            f"file-repo-c-{POISON_AT}"
        ]
        [line] = await dlq.listing(redis_client, layout, 10)
        assert line.split("\t")[4] == (
            f"bundle bootstrap-repo-c chunk {chunk}/{chunks} event {index} "
            f"(file-repo-c-{POISON_AT})"
        )

        # replayed while the cause is still there: refused again, cleanly, on its own
        handle = f"{partition}/{dead_id.decode()}"
        assert (await dlq.replay(redis_client, layout, [handle])).replayed == 1

        async def dead_again() -> bool:
            rows = await resolve(redis_client.xrange(dead_stream))
            return len(rows) == 1 and rows[0][0] != dead_id

        await _until(dead_again, "the replayed event to be dead-lettered again")
        [(again_id, again)] = await resolve(redis_client.xrange(dead_stream))
        assert again[deadletter.EVENT_ID] == f"file-repo-c-{POISON_AT}".encode()
        assert again[deadletter.CHUNK] == f"{chunk}/{chunks}".encode()
        assert await store.count_events() == EVENTS - 1

        # the cause fixed: the replay stores just that event
        await _fix(settings)
        assert (
            await dlq.replay(redis_client, layout, [f"{partition}/{again_id.decode()}"])
        ).replayed == 1

        async def all_stored() -> bool:
            return await store.count_events() == EVENTS

        await _until(all_stored, "the replayed event to be stored")
        assert await resolve(redis_client.xlen(dead_stream)) == 0
        ids = [e.event_id async for e in store.iter_events()]
        assert sorted(ids) == sorted(f"file-repo-c-{i}" for i in range(EVENTS))
    finally:
        reader.stop()
        await asyncio.wait_for(running, 20)
        await store.close()
