"""Batch handler and re-delivery tests: fakeredis streams, a real NDJSON store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from consumer import crashes, deadletter
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


async def pending_ids(redis: Redis, stream: str) -> list[str]:
    rows = await resolve(redis.xpending_range(stream, GROUP, min="-", max="+", count=100))
    return [r["message_id"].decode() for r in rows]


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


class KillsOn(FlakyStore):
    """'Kills the process' whenever a batch holds bundle ``poison``."""

    def __init__(self, inner: EventStore, poison: str) -> None:
        super().__init__(inner, failures=0)
        self.poison = poison

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        if any(e.bundle.bundle_id == self.poison for e in envelopes):
            raise Killed(f"{self.poison} kills its writer")
        return await self.inner.write_batch(partition, envelopes)


async def steps_forever(reader: Reader) -> None:
    while True:
        await reader.step(0)


@pytest.mark.integration
async def test_only_the_entry_in_flight_at_a_crash_counts_it(
    redis_client: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    """A batch dies with its killer; after the restart the entries are written one at a
    time under an in-flight mark: the healthy ones are stored, the killer gains one death
    per crash and is dead-lettered at max_deliveries."""
    settings = make_settings(tmp_path, partitions=1, consumer_name="c", max_deliveries=2)
    layout = settings.layout
    await ensure_group(redis_client, layout)
    await add_bundles(redis_client, layout, lifecycle(5))
    store = KillsOn(ndjson_store, "bundle-att-2")

    def process() -> Reader:  # a fresh process; its predecessor's lease has run out
        return Reader(redis_client, store, settings, ConsumerMetrics())

    first = process()
    assert await first.ownership.acquire(0)
    await first.take_over(0)
    first.states[0].reread = False
    with pytest.raises(Killed):
        await first.handle_batch(0, await first.read_once(0))  # all five in one batch
    assert await stored_ids(ndjson_store) == []
    for died in range(settings.max_deliveries + 1):
        await first.ownership.lease(0).release()
        first = process()
        if died < settings.max_deliveries:
            with pytest.raises(Killed):
                await steps_forever(first)
            assert await crashes.deaths(redis_client, layout, 0) == {
                (await pending_ids(redis_client, layout.stream(0)))[0]: died + 1
            }
        else:
            while first.states[0].reread or await pending(redis_client, layout.stream(0)):
                await first.step(0)
    dead = await resolve(redis_client.xrange(layout.dead_stream(0)))
    assert len(dead) == 1
    assert dead[0][1][deadletter.REASON] == b"crashed its consumer 2 times"
    assert orjson.loads(dead[0][1][b"bundle"])["bundle_id"] == "bundle-att-2"
    assert len(await stored_ids(ndjson_store)) == 4 * 5  # every other event, once
    assert await pending(redis_client, layout.stream(0)) == 0
    assert await crashes.deaths(redis_client, layout, 0) == {}


@pytest.mark.integration
async def test_two_readers_split_the_partitions_and_store_each_event_once(
    redis_client: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    a, b = (
        Reader(
            redis_client,
            ndjson_store,
            make_settings(tmp_path, consumer_name=name, batch=3, lease_s=1),
            ConsumerMetrics(),
        )
        for name in ("a", "b")
    )
    tasks = [asyncio.create_task(r.run()) for r in (a, b)]
    for _ in range(200):  # up to 10 s: a took both, then gave one to b
        if len(a.ownership.held) == len(b.ownership.held) == 1:
            break
        await asyncio.sleep(0.05)
    assert a.ownership.held | b.ownership.held == {0, 1}
    raws = lifecycle(40)
    await add_bundles(redis_client, a.layout, raws)
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
        assert await pending(redis_client, a.layout.stream(p)) == 0


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no handler catches it."""


class DiesAfterWrite(FlakyStore):
    """Commits the batch, then the 'process' dies before the XACK."""

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        result = await self.inner.write_batch(partition, envelopes)
        raise Killed(f"killed after writing {result.written} events")


async def test_killed_between_write_and_xack_is_reclaimed_and_stored_once(
    redis_client: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    """The at-least-once window: the batch is committed but not acked. The next holder of
    the partition's lease takes it over; storage drops the re-delivered events as
    duplicates."""
    victim_settings = make_settings(tmp_path, consumer_name="victim")
    await ensure_group(redis_client, victim_settings.layout)
    victim = Reader(
        redis_client, DiesAfterWrite(ndjson_store, 0), victim_settings, ConsumerMetrics()
    )
    raws = lifecycle(4)
    added = await add_bundles(redis_client, victim.layout, raws)
    partition = added[0][0]
    entries = await victim.read_once(partition)
    with pytest.raises(Killed):
        await victim.handle_batch(partition, entries)
    stream = victim.layout.stream(partition)
    assert await pending(redis_client, stream) == len(entries)  # written, never acked
    written_once = sorted(await stored_ids(ndjson_store))
    assert written_once

    survivor = Reader(
        redis_client,
        ndjson_store,
        make_settings(tmp_path, consumer_name="survivor"),
        ConsumerMetrics(),
    )
    assert await survivor.ownership.acquire(partition)
    assert await survivor.take_over(partition) == len(entries)
    while entry := await survivor.read_pending(partition):
        await survivor.handle_alone(partition, entry)
    assert await pending(redis_client, stream) == 0
    assert sorted(await stored_ids(ndjson_store)) == written_once  # nothing twice
    assert survivor.metrics.duplicates._value.get() == len(written_once)
    assert survivor.metrics.events_written._value.get() == 0


class GatedStore(FlakyStore):
    """Holds every write until ``gate`` opens, saying when one has started."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner, failures=0)
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        self.started.set()
        await self.gate.wait()
        return await self.inner.write_batch(partition, envelopes)


async def test_one_entry_is_written_alone_per_process_whatever_its_partition(
    redis_client: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    """Marked writes of two partitions never overlap: a death while one is written must be
    charged to it alone, not also to the other partition's entry marked at that moment."""
    settings = make_settings(tmp_path, consumer_name="recovering")
    await ensure_group(redis_client, settings.layout)
    gated = GatedStore(ndjson_store)
    reader = Reader(redis_client, gated, settings, ConsumerMetrics())
    layout = reader.layout
    by_partition: dict[int, dict[str, object]] = {}
    for raw in lifecycle(20):
        by_partition.setdefault(layout.partition_of(str(raw["bundle_id"])), raw)
    raws = [by_partition[0], by_partition[1]]
    await add_bundles(redis_client, layout, raws)
    entries = {p: (await reader.read_once(p))[0] for p in (0, 1)}
    first = asyncio.create_task(reader.handle_alone(0, entries[0]))
    await asyncio.wait_for(gated.started.wait(), 5)
    second = asyncio.create_task(reader.handle_alone(1, entries[1]))
    await asyncio.sleep(0.05)  # room for the second to mark its entry, were it not held
    assert await crashes.deaths(redis_client, layout, 0) == {entries[0][0]: 1}
    assert await crashes.deaths(redis_client, layout, 1) == {}
    gated.gate.set()
    await asyncio.gather(first, second)
    for p in (0, 1):
        assert await crashes.deaths(redis_client, layout, p) == {}
        assert await pending(redis_client, layout.stream(p)) == 0
