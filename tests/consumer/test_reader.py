"""Batch handler and re-delivery tests: fakeredis streams, a real NDJSON store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consumer import deadletter
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, ensure_group
from storage.base import BatchResult, EntryOutcome, EventStore
from storage.envelope import Envelope
from storage.queue import GROUP, EntryCounts, announce_token, resolve
from tests import factories as f
from tests.consumer.conftest import FlakyStore, add_bundles, make_settings


async def pending(redis: Redis, stream: str) -> int:
    summary = await resolve(redis.xpending(stream, GROUP))
    return int(summary["pending"])


async def stored_ids(store: EventStore) -> list[str]:
    return [e.event_id async for e in store.iter_events()]


def lifecycle(n: int) -> list[dict[str, object]]:
    return [f.attempt_lifecycle(f"att-{i}", f"task-{i}") for i in range(n)]


async def test_batch_is_written_then_acked_and_announced(reader: Reader) -> None:
    layout = reader.layout
    raws = lifecycle(6)
    added = await add_bundles(reader.redis, layout, raws)
    pubsub = reader.redis.pubsub()
    await pubsub.subscribe(layout.committed_channel)
    await pubsub.get_message(timeout=0.1)  # the subscribe confirmation
    tokens: set[str] = set()
    for partition in range(layout.partitions):
        entries = await reader.read_once(partition)
        assert await pending(reader.redis, layout.stream(partition)) == len(entries)
        if entries:
            await reader.handle_batch(partition, entries)
            message = await pubsub.get_message(timeout=1)
            assert message is not None
            tokens.update(message["data"].decode().split(","))
        assert await pending(reader.redis, layout.stream(partition)) == 0
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    done = EntryCounts(stored=5)  # each lifecycle bundle: five new events
    assert tokens == {announce_token(p, i, done) for p, i in added}
    for p, i in added:
        assert await resolve(reader.redis.get(layout.committed_key(p, i))) == b"5.0.0.0"
    expected = sorted(e["event_id"] for raw in raws for e in raw["events"])  # type: ignore[attr-defined]
    assert sorted(await stored_ids(reader.store)) == expected
    assert reader.metrics.events_written._value.get() == len(expected)


async def test_outage_keeps_the_batch_pending_and_retries_until_storage_returns(
    reader: Reader, ndjson_store: EventStore
) -> None:
    flaky = FlakyStore(ndjson_store, failures=10**9)  # down until we say otherwise
    reader.store = flaky
    (partition, _), *_ = await add_bundles(reader.redis, reader.layout, lifecycle(1))
    entries = await reader.read_once(partition)
    task = asyncio.create_task(reader.handle_batch(partition, entries))
    for _ in range(100):
        if flaky.calls >= 4:
            break
        await asyncio.sleep(0.01)
    assert not reader.storage_ok
    assert "StorageUnavailable" in reader.storage_problem
    assert reader.metrics.storage_available._value.get() == 0
    assert await pending(reader.redis, reader.layout.stream(partition)) == 1
    assert await stored_ids(ndjson_store) == []
    assert await resolve(reader.redis.xlen(reader.layout.dead_stream(partition))) == 0
    flaky.failures = 0  # the database is back
    counts = await asyncio.wait_for(task, 5)
    assert counts == EntryCounts(stored=5)
    assert reader.storage_ok
    assert reader.metrics.storage_available._value.get() == 1
    assert reader.metrics.storage_errors._value.get() == flaky.calls - 1
    assert await pending(reader.redis, reader.layout.stream(partition)) == 0
    assert len(await stored_ids(ndjson_store)) == 5


async def test_undecodable_entry_is_dead_at_once_and_rest_flows(reader: Reader) -> None:
    layout = reader.layout
    await add_bundles(reader.redis, layout, [f.attempt_lifecycle("att-p", "task-p")])
    stream = layout.stream(0)
    bad_id = (await resolve(reader.redis.xadd(stream, {b"v": b"1", b"bundle": b"{nope"}))).decode()
    for p in range(layout.partitions):
        entries = await reader.read_once(p)
        if entries:
            await reader.handle_batch(p, entries)
    dead = await resolve(reader.redis.xrange(layout.dead_stream(0)))
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[deadletter.ENTRY_ID].decode() == bad_id
    assert fields[deadletter.REASON].startswith(b"undecodable")
    assert fields[b"bundle"] == b"{nope"
    assert await pending(reader.redis, stream) == 0
    assert len(await stored_ids(reader.store)) == 5
    # a waiter for the bad entry is answered too: one (uncountable) event dead-lettered
    marker = await resolve(reader.redis.get(layout.committed_key(0, bad_id)))
    assert EntryCounts.parse(marker) == EntryCounts(dead_lettered=1)


async def test_backend_outcomes_are_announced_per_entry(reader: Reader) -> None:
    """Revisions and duplicates reported by the backend reach the markers and metrics."""
    layout = reader.layout
    first = f.body("t", "b-same", [f.event("task.created", {"task_id": "x"}, event_id="e-1")])
    again = f.body("t", "b-same", [f.event("task.created", {"task_id": "x"}, event_id="e-1")])
    [(partition, first_id)] = await add_bundles(reader.redis, layout, [first])
    await reader.handle_batch(partition, await reader.read_once(partition))
    [(_, again_id)] = await add_bundles(reader.redis, layout, [again])
    counts = await reader.handle_batch(partition, await reader.read_once(partition))
    assert counts == EntryCounts(duplicates=1)
    assert await resolve(reader.redis.get(layout.committed_key(partition, first_id))) == b"1.0.0.0"
    assert await resolve(reader.redis.get(layout.committed_key(partition, again_id))) == b"0.0.1.0"
    assert reader.metrics.duplicates._value.get() == 1

    class Revising(FlakyStore):
        async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
            outcomes = {e.entry_id: EntryOutcome(revisions=len(e.bundle.events)) for e in envelopes}
            return BatchResult(
                revisions=sum(o.revisions for o in outcomes.values()), outcomes=outcomes
            )

    reader.store = Revising(reader.store, 0)
    [(_, revised_id)] = await add_bundles(reader.redis, layout, [again])
    await reader.handle_batch(partition, await reader.read_once(partition))
    assert (
        await resolve(reader.redis.get(layout.committed_key(partition, revised_id))) == b"0.1.0.0"
    )
    assert reader.metrics.revisions._value.get() == 1


async def test_reused_event_id_is_stored_as_a_revision(reader: Reader) -> None:
    """A real store: new content under a known event_id is a revision, nothing dead-lettered."""
    layout = reader.layout
    first = f.body("t", "b-same", [f.event("task.created", {"task_id": "x"}, event_id="e-1")])
    second = f.body("t", "b-same", [f.event("task.created", {"task_id": "y"}, event_id="e-1")])
    [(partition, _)] = await add_bundles(reader.redis, layout, [first])
    await reader.handle_batch(partition, await reader.read_once(partition))
    await add_bundles(reader.redis, layout, [second])
    counts = await reader.handle_batch(partition, await reader.read_once(partition))
    assert counts == EntryCounts(revisions=1)
    assert await resolve(reader.redis.xrange(layout.dead_stream(partition))) == []
    stored = [e async for e in reader.store.iter_events()]
    assert [(e.event_id, e.revision, e.payload["task_id"]) for e in stored] == [
        ("e-1", 1, "x"),
        ("e-1", 2, "y"),
    ]
    assert await pending(reader.redis, layout.stream(partition)) == 0


async def test_reclaim_dead_letters_poison_while_the_rest_flows(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, partitions=1, consumer_name="c2", max_deliveries=3)
    other = Reader(
        fake_redis, ndjson_store, make_settings(tmp_path, partitions=1), ConsumerMetrics()
    )
    reader = Reader(fake_redis, ndjson_store, settings, ConsumerMetrics())
    await ensure_group(fake_redis, settings.layout)
    stream = settings.layout.stream(0)
    await add_bundles(fake_redis, settings.layout, lifecycle(3))
    entries = await other.read_once(0)  # c1 takes them and "crashes"
    assert len(entries) == 3
    poison = entries[0][0]
    for _ in range(3):  # three more deliveries of one entry: crashed consumers before
        await resolve(fake_redis.xclaim(stream, GROUP, "ghost", 0, [poison]))
    await asyncio.sleep(0.15)  # past claim_idle_ms
    assert await reader.reclaim(0) == 0  # not before our own pending list was re-read
    reader.states[0].resumed = True
    assert await reader.reclaim(0) == 3
    dead = await resolve(fake_redis.xrange(settings.layout.dead_stream(0)))
    assert [d[1][deadletter.ENTRY_ID].decode() for d in dead] == [poison]
    assert dead[0][1][deadletter.REASON].startswith(b"max_deliveries")
    # the rest is handed to the partition's task (the only writer of the partition)
    [handed] = reader.states[0].handoff
    assert [i for i, _ in handed] == [i for i, _ in entries[1:]]
    await reader.handle_batch(0, reader.states[0].handoff.popleft())
    assert await pending(fake_redis, stream) == 0
    assert len(await stored_ids(ndjson_store)) == 10
    assert reader.metrics.reclaimed._value.get() == 3


async def test_two_readers_split_the_work_and_store_each_event_once(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    a = Reader(
        fake_redis,
        ndjson_store,
        make_settings(tmp_path, consumer_name="a", batch=3),
        ConsumerMetrics(),
    )
    b = Reader(
        fake_redis,
        ndjson_store,
        make_settings(tmp_path, consumer_name="b", batch=3),
        ConsumerMetrics(),
    )
    raws = lifecycle(40)
    await add_bundles(fake_redis, a.layout, raws)
    tasks = [asyncio.create_task(r.run()) for r in (a, b)]
    expected = 40 * 5
    for _ in range(400):  # up to 20 s
        if await ndjson_store.count_events() >= expected:
            break
        await asyncio.sleep(0.05)
    a.stop()
    b.stop()
    await asyncio.gather(*tasks)
    ids = await stored_ids(ndjson_store)
    assert len(ids) == len(set(ids)) == expected
    assert a.metrics.events_written._value.get() > 0
    assert b.metrics.events_written._value.get() > 0
    for p in range(a.layout.partitions):
        assert await pending(fake_redis, a.layout.stream(p)) == 0


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no handler catches it."""


class DiesAfterWrite(FlakyStore):
    """Commits the batch, then the 'process' dies before the XACK."""

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        result = await self.inner.write_batch(partition, envelopes)
        raise Killed(f"killed after writing {result.written} events")


async def test_killed_between_write_and_xack_is_reclaimed_and_stored_once(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    """The at-least-once window: the batch is committed but not acked. Another consumer
    reclaims it after the idle time; storage drops the re-delivered events as duplicates."""
    victim_settings = make_settings(tmp_path, consumer_name="victim")
    await ensure_group(fake_redis, victim_settings.layout)
    victim = Reader(fake_redis, DiesAfterWrite(ndjson_store, 0), victim_settings, ConsumerMetrics())
    raws = lifecycle(4)
    added = await add_bundles(fake_redis, victim.layout, raws)
    partition = added[0][0]
    entries = await victim.read_once(partition)
    with pytest.raises(Killed):
        await victim.handle_batch(partition, entries)
    stream = victim.layout.stream(partition)
    assert await pending(fake_redis, stream) == len(entries)  # written, never acked
    written_once = sorted(await stored_ids(ndjson_store))
    assert written_once

    survivor = Reader(
        fake_redis,
        ndjson_store,
        make_settings(tmp_path, consumer_name="survivor"),
        ConsumerMetrics(),
    )
    await asyncio.sleep(victim_settings.claim_idle_ms / 1000 + 0.05)
    survivor.states[partition].resumed = True
    assert await survivor.reclaim(partition) == len(entries)
    await survivor.handle_batch(partition, survivor.states[partition].handoff.popleft())
    assert await pending(fake_redis, stream) == 0
    assert sorted(await stored_ids(ndjson_store)) == written_once  # nothing twice
    assert survivor.metrics.duplicates._value.get() == len(written_once)
    assert survivor.metrics.events_written._value.get() == 0
