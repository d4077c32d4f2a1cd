"""A batch with entries storage refuses: bisection stores the rest, dead-letters only the
refused ones and the partition keeps flowing; a transient failure never dead-letters.

fakeredis streams, a real NDJSON store behind a wrapper that refuses chosen bundles with
StorageDataError (as a backend does for a value it cannot store) or fails like an outage.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from consumer import deadletter
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, ensure_group
from storage.base import BatchResult, EventStore, StorageDataError, StorageUnavailable
from storage.envelope import Envelope
from storage.queue import GROUP, EntryCounts, resolve
from tests import factories as f
from tests.consumer.conftest import FlakyStore, RefusingStore, add_bundles, make_settings

EVENTS = 5  # events per attempt_lifecycle bundle


async def one_partition(
    redis: Redis, store: EventStore, tmp_path: Path, n: int, bad: set[int]
) -> tuple[Reader, RefusingStore, list[str]]:
    """A one-partition reader over a refusing store, with ``n`` bundles queued; the bundles
    numbered in ``bad`` are refused. Returns the reader, the store and the entry ids."""
    settings = make_settings(tmp_path, partitions=1, batch=max(n, 1))
    refusing = RefusingStore(store, {f"bundle-att-{i}" for i in bad})
    reader = Reader(redis, refusing, settings, ConsumerMetrics())
    await ensure_group(redis, settings.layout)
    raws = [f.attempt_lifecycle(f"att-{i}", f"task-{i}") for i in range(n)]
    added = await add_bundles(redis, settings.layout, raws)
    return reader, refusing, [i for _, i in added]


async def dead(reader: Reader) -> list[tuple[str, str]]:
    rows = await resolve(reader.redis.xrange(reader.layout.dead_stream(0)))
    return [(r[deadletter.ENTRY_ID].decode(), r[deadletter.REASON].decode()) for _, r in rows]


async def stored_bundles(store: EventStore) -> set[str]:
    return {e.bundle_id async for e in store.iter_events()}


async def pending(redis: Redis, stream: str) -> int:
    return int((await resolve(redis.xpending(stream, GROUP)))["pending"])


async def marker(reader: Reader, entry_id: str) -> EntryCounts | None:
    value = await resolve(reader.redis.get(reader.layout.committed_key(0, entry_id)))
    return None if value is None else EntryCounts.parse(value)


async def test_one_bad_among_many_costs_log_n_writes_and_the_rest_is_stored(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    n, bad = 16, 11
    reader, store, ids = await one_partition(fake_redis, ndjson_store, tmp_path, n, {bad})
    counts = await reader.handle_batch(0, await reader.read_once(0))
    assert await dead(reader) == [
        (
            ids[bad],
            "unstorable: StorageDataError: value out of range in bundle bundle-att-11 (test)",
        )
    ]
    assert await stored_bundles(ndjson_store) == {f"bundle-att-{i}" for i in range(n)} - {
        f"bundle-att-{bad}"
    }
    # the whole batch, then two halves per level down to the single bad entry, then its
    # events bisected (every part refused here: 2·5 - 2 writes) before it goes whole
    assert store.calls == 1 + 2 * int(math.log2(n)) + 2 * EVENTS - 2
    assert counts == EntryCounts(stored=(n - 1) * EVENTS, dead_lettered=EVENTS)
    assert await marker(reader, ids[bad]) == EntryCounts(dead_lettered=EVENTS)
    assert await marker(reader, ids[0]) == EntryCounts(stored=EVENTS)
    assert await pending(fake_redis, reader.layout.stream(0)) == 0
    assert reader.metrics.dead_lettered.labels("unstorable")._value.get() == 1
    assert reader.storage_ok


async def test_two_bad_entries_only_they_are_dead(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    n, bad = 10, {0, 7}
    reader, _, ids = await one_partition(fake_redis, ndjson_store, tmp_path, n, bad)
    await reader.handle_batch(0, await reader.read_once(0))
    assert sorted(i for i, _ in await dead(reader)) == sorted(ids[b] for b in bad)
    assert len(await stored_bundles(ndjson_store)) == n - len(bad)
    assert await pending(fake_redis, reader.layout.stream(0)) == 0


async def test_all_bad_dead_letters_each_entry_and_the_partition_flows_on(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    n = 5
    reader, store, ids = await one_partition(fake_redis, ndjson_store, tmp_path, n, set(range(n)))
    await reader.handle_batch(0, await reader.read_once(0))
    assert [i for i, _ in await dead(reader)] == ids
    # every node of the bisection tree of the entries, then of each entry's events
    assert store.calls == 2 * n - 1 + n * (2 * EVENTS - 2)
    assert await stored_bundles(ndjson_store) == set()
    # later entries of the same partition are read and stored
    await add_bundles(fake_redis, reader.layout, [f.attempt_lifecycle("later", "t")])
    await reader.handle_batch(0, await reader.read_once(0))
    assert await stored_bundles(ndjson_store) == {"bundle-later"}


async def test_transient_error_during_bisection_retries_without_dead_lettering(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    """The data error starts a bisection, then the database goes away: nothing is
    dead-lettered while it is away, the entries stay pending; once it is back the bad entry
    alone is dead and the healthy ones are stored exactly once."""
    n, bad = 8, 5
    reader, store, ids = await one_partition(fake_redis, ndjson_store, tmp_path, n, {bad})
    store.down_from = 3  # the first half is stored (call 2), then the outage begins
    entries = await reader.read_once(0)
    task = asyncio.create_task(reader.handle_batch(0, entries))
    for _ in range(200):
        if store.calls >= 6:
            break
        await asyncio.sleep(0.01)
    assert not task.done()
    assert await dead(reader) == []
    assert not reader.storage_ok
    # the first half was stored and acked before the outage; the rest waits, pending
    assert await stored_bundles(ndjson_store) == {f"bundle-att-{i}" for i in range(4)}
    assert await pending(fake_redis, reader.layout.stream(0)) == n - 4
    store.down_from = None
    counts = await asyncio.wait_for(task, 5)
    assert [i for i, _ in await dead(reader)] == [ids[bad]]
    events = [e.event_id async for e in ndjson_store.iter_events()]
    assert len(events) == len(set(events)) == (n - 1) * EVENTS
    assert counts.duplicates == 0
    assert counts.stored == (n - 1) * EVENTS
    assert reader.storage_ok
    assert await pending(fake_redis, reader.layout.stream(0)) == 0


class Unreachable(FlakyStore):
    """For its first ``failures`` writes the database answers neither writes nor pings, and
    the driver's error is one the backend did not classify."""

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("server closed the connection unexpectedly (test)")
        return await self.inner.write_batch(partition, envelopes)

    async def ping(self) -> None:
        if self.calls <= self.failures:
            raise StorageUnavailable("no answer (test)")


async def test_an_unclassified_error_while_the_store_is_unreachable_is_an_outage(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    """An error the backend did not classify on an entry alone is dead-lettered only if the
    store still answers a ping; otherwise it is retried like an outage."""
    reader, _, _ = await one_partition(fake_redis, ndjson_store, tmp_path, 1, set())
    reader.store = Unreachable(ndjson_store, failures=3)
    await asyncio.wait_for(reader.handle_batch(0, await reader.read_once(0)), 5)
    assert await dead(reader) == []
    assert await stored_bundles(ndjson_store) == {"bundle-att-0"}
    assert reader.metrics.storage_errors._value.get() == 3


class EventRefusingStore(FlakyStore):
    """Wraps a real store; a write holding an event in ``bad`` raises StorageDataError, and
    so does one holding artifacts while ``bad_artifacts`` is set."""

    def __init__(self, inner: EventStore, bad: set[str], bad_artifacts: bool = False) -> None:
        super().__init__(inner, failures=0)
        self.bad = bad
        self.bad_artifacts = bad_artifacts

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        self.calls += 1
        for env in envelopes:
            refused = [e.event_id for e in env.bundle.events if e.event_id in self.bad]
            if refused:
                raise StorageDataError(f"value out of range in event {refused[0]} (test)")
            if self.bad_artifacts and env.bundle.artifacts:
                raise StorageDataError("artifact refused (test)")
        return await self.inner.write_batch(partition, envelopes)


async def _one_bundle(
    redis: Redis, store: EventStore, tmp_path: Path, **refuse: Any
) -> tuple[Reader, str, list[str]]:
    settings = make_settings(tmp_path, partitions=1)
    reader = Reader(redis, EventRefusingStore(store, **refuse), settings, ConsumerMetrics())
    await ensure_group(redis, settings.layout)
    raw = f.attempt_lifecycle("att-1", "task-1")
    [(_, entry_id)] = await add_bundles(redis, settings.layout, [raw])
    return reader, entry_id, [e["event_id"] for e in raw["events"]]


async def test_one_refused_event_is_dead_alone_and_the_artifacts_keep_their_attempt(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    reader, entry_id, event_ids = await _one_bundle(
        fake_redis, ndjson_store, tmp_path, bad={"att-1-02"}
    )
    counts = await reader.handle_batch(0, await reader.read_once(0))
    n = len(event_ids)
    assert counts == EntryCounts(stored=n - 1, dead_lettered=1)
    assert await marker(reader, entry_id) == EntryCounts(stored=n - 1, dead_lettered=1)
    stored = [e.event_id async for e in ndjson_store.iter_events()]
    assert sorted(stored) == sorted(set(event_ids) - {"att-1-02"})
    [(_, letter)] = await resolve(fake_redis.xrange(reader.layout.dead_stream(0)))
    assert (letter[deadletter.EVENT], letter[deadletter.EVENT_ID]) == (b"1", b"att-1-02")
    assert letter[deadletter.CHUNK] == b"0/1"
    assert [e["event_id"] for e in orjson.loads(letter[b"bundle"])["events"]] == ["att-1-02"]
    assert "artifacts" not in orjson.loads(letter[b"bundle"])  # stored with the good events
    detail = await ndjson_store.get_attempt("att-1")
    assert detail is not None
    assert len(detail.artifacts) == 1
    assert await pending(fake_redis, reader.layout.stream(0)) == 0


async def test_refused_artifacts_are_dead_alone_with_the_good_events_for_replay(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    reader, entry_id, event_ids = await _one_bundle(
        fake_redis, ndjson_store, tmp_path, bad=set(), bad_artifacts=True
    )
    counts = await reader.handle_batch(0, await reader.read_once(0))
    n = len(event_ids)
    # every event stored; artifacts are not events: nothing of the count is dead
    assert counts == EntryCounts(stored=n)
    assert await marker(reader, entry_id) == EntryCounts(stored=n)
    [(_, letter)] = await resolve(fake_redis.xrange(reader.layout.dead_stream(0)))
    assert letter[deadletter.EVENT] == b"artifacts"
    bundle = orjson.loads(letter[b"bundle"])
    assert [e["event_id"] for e in bundle["events"]] == event_ids  # duplicates on replay
    assert len(bundle["artifacts"]) == 1
    assert letter[deadletter.REASON] == b"unstorable: StorageDataError: artifact refused (test)"
    assert await pending(fake_redis, reader.layout.stream(0)) == 0
