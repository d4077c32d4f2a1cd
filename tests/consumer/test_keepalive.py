"""A live consumer keeps what it works on; only a stopped consumer's entries are claimed;
one unstorable entry no longer takes its batch and partition down with it.

Real Redis (XAUTOCLAIM, XCLAIM JUSTID and delivery counts as the server keeps them) and a
real NDJSON store behind a switch that makes it unavailable. The outage lasts several claim
idle times, during which another consumer runs its reclaim over and over.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consumer import crashes, keepalive
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, ensure_group
from storage.base import EventStore
from storage.config import create_store
from storage.envelope import encode
from storage.queue import GROUP, resolve
from storage.schema import Bundle
from tests import factories as f
from tests.consumer.conftest import (
    FlakyStore,
    RefusingStore,
    SettingsFactory,
    add_bundles,
    make_settings,
)

pytestmark = pytest.mark.integration

CLAIM_IDLE_MS = 200


async def deliveries(redis: Redis, stream: str) -> dict[str, tuple[str, int]]:
    rows = await resolve(redis.xpending_range(stream, GROUP, min="-", max="+", count=100))
    return {
        r["message_id"].decode(): (r["consumer"].decode(), int(r["times_delivered"])) for r in rows
    }


async def until(predicate: object, seconds: float) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_entries_retried_through_an_outage_are_not_claimed_by_anyone(
    redis_client: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, partitions=1, consumer_name="live", claim_idle_ms=CLAIM_IDLE_MS, max_deliveries=1
    )
    down = FlakyStore(ndjson_store, failures=10**9)
    live = Reader(redis_client, down, settings, ConsumerMetrics())
    other = Reader(
        redis_client,
        ndjson_store,
        make_settings(tmp_path, partitions=1, consumer_name="other", claim_idle_ms=CLAIM_IDLE_MS),
        ConsumerMetrics(),
    )
    other.states[0].resumed = True
    raws = [f.attempt_lifecycle(f"a{i}", "t") for i in range(3)]
    task = live.start()
    try:
        await add_bundles(redis_client, settings.layout, raws)
        stream = settings.layout.stream(0)
        await until(lambda: down.calls >= 2, 5)  # read, and retrying through the outage
        for _ in range(10):  # 10 x 150 ms: the outage lasts 7.5 claim idle times
            await asyncio.sleep(0.15)
            assert await other.reclaim(0) == 0
            assert await live.reclaim(0) == 0  # nor by its own reclaim job
        held = await deliveries(redis_client, stream)
        assert len(held) == 3
        assert set(held.values()) == {("live", 1)}  # never re-delivered
        down.failures = 0  # the database is back
        await until(lambda: not live.states[0].held, 5)
        assert await deliveries(redis_client, stream) == {}
        assert await ndjson_store.count_events() == 15
        assert await resolve(redis_client.xlen(settings.layout.dead_stream(0))) == 0
    finally:
        live.stop()
        await asyncio.wait_for(task, 5)


async def test_an_entry_delivered_to_us_without_our_knowing_is_written_after_the_claim_time(
    redis_client: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    """A read's reply can be lost without an error (seen once while a Redis Cluster moved
    the stream's slot): the entry is pending under our name, yet no task of ours holds it.
    The reclaim job finds it once idle past the claim time, and the partition task writes it."""
    settings = make_settings(
        tmp_path, partitions=1, consumer_name="live", claim_idle_ms=CLAIM_IDLE_MS
    )
    live = Reader(redis_client, ndjson_store, settings, ConsumerMetrics())
    stream = settings.layout.stream(0)
    await ensure_group(redis_client, settings.layout)
    task = live.start()
    try:
        await until(lambda: live.states[0].resumed, 5)
        bundle = Bundle.model_validate(f.attempt_lifecycle("lost", "t"))
        async with redis_client.pipeline(transaction=True) as pipe:
            # delivered to "live" in the XADD's own transaction: the reader's blocked read
            # never sees it, as if the reply had been lost on the way
            pipe.xadd(stream, encode(bundle, "test"))  # type: ignore[arg-type]
            pipe.xreadgroup(GROUP, "live", {stream: ">"}, count=1)
            await pipe.execute()
        await asyncio.sleep(2 * CLAIM_IDLE_MS / 1000)
        assert set((await deliveries(redis_client, stream)).values()) == {("live", 1)}
        assert await ndjson_store.count_events() == 0  # nothing would write it before a restart
        assert await live.reclaim(0) == 0  # nothing claimed from anyone: it is ours
        for _ in range(100):
            if not await deliveries(redis_client, stream):
                break
            await asyncio.sleep(0.05)
        assert await deliveries(redis_client, stream) == {}
        assert await ndjson_store.count_events() == 5
    finally:
        live.stop()
        await asyncio.wait_for(task, 5)


async def test_entries_of_a_consumer_that_stopped_are_taken_over_with_its_lease(
    redis_client: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, partitions=1, consumer_name="dies", claim_idle_ms=CLAIM_IDLE_MS, lease_s=1
    )
    down = FlakyStore(ndjson_store, failures=10**9)
    dies = Reader(redis_client, down, settings, ConsumerMetrics())
    task = dies.start()
    await add_bundles(redis_client, settings.layout, [f.attempt_lifecycle("a", "t")])
    await until(lambda: down.calls >= 1, 5)
    task.cancel()  # the process is gone: no keep-alive, no lease renewal any more
    await asyncio.gather(task, return_exceptions=True)
    survivor = Reader(
        redis_client,
        ndjson_store,
        make_settings(
            tmp_path, partitions=1, consumer_name="survivor", claim_idle_ms=CLAIM_IDLE_MS
        ),
        ConsumerMetrics(),
    )
    await asyncio.sleep(1.05)  # its lease's TTL (a cancelled task even released it)
    assert await survivor.ownership.acquire(0)
    assert await survivor.take_over(0) == 1
    stream = settings.layout.stream(0)
    assert set((await deliveries(redis_client, stream)).values()) == {("survivor", 1)}
    entry = await survivor.read_pending(0)
    assert entry is not None
    await survivor.handle_alone(0, entry)
    assert await ndjson_store.count_events() == 5
    assert await deliveries(redis_client, stream) == {}
    assert await crashes.deaths(redis_client, settings.layout, 0) == {}


async def test_one_unstorable_bundle_among_healthy_ones_while_reclaim_runs(
    backend_settings: SettingsFactory, redis_client: Redis
) -> None:
    """The whole loop as the process runs it (partition task, keep-alive, reclaim every
    100 ms with a 200 ms claim idle and at most 2 deliveries), 1 refused bundle among 7 in
    one partition, then more bundles: only the refused one is dead, the rest stored once,
    the later ones read and stored too."""
    settings = backend_settings(
        partitions=1, claim_idle_ms=CLAIM_IDLE_MS, max_deliveries=2, batch=50
    )
    inner = create_store(settings)
    await inner.open()
    store = RefusingStore(inner, {"bundle-bad"})
    reader = Reader(redis_client, store, settings, ConsumerMetrics())
    task = reader.start()

    async def reclaiming() -> None:
        while True:
            await reader.reclaim_all()
            await asyncio.sleep(0.1)

    cron = asyncio.create_task(reclaiming())
    try:
        raws = [f.attempt_lifecycle(f"h{i}", "t") for i in range(3)]
        raws.append(f.attempt_lifecycle("bad", "t"))
        raws += [f.attempt_lifecycle(f"h{i}", "t") for i in range(3, 6)]
        await add_bundles(redis_client, settings.layout, raws)
        await asyncio.sleep(1.0)  # five claim idle times
        later = [f.attempt_lifecycle(f"later{i}", "t") for i in range(3)]
        await add_bundles(redis_client, settings.layout, later)

        async def stored() -> set[str]:
            return {e.bundle_id async for e in inner.iter_events()}

        expected = {r["bundle_id"] for r in raws + later} - {"bundle-bad"}
        for _ in range(100):
            if await stored() == expected:
                break
            await asyncio.sleep(0.05)
        assert await stored() == expected
        events = [e.event_id async for e in inner.iter_events()]
        assert len(events) == len(set(events)) == 5 * len(expected)
        dead = await resolve(redis_client.xrange(settings.layout.dead_stream(0)))
        assert [d[b"dead_reason"].split(b":")[0] for _, d in dead] == [b"unstorable"]
        assert reader.metrics.reclaimed._value.get() == 0  # nothing of ours was claimed
    finally:
        cron.cancel()
        reader.stop()
        await asyncio.wait_for(task, 5)
        await asyncio.gather(cron, return_exceptions=True)
        await inner.close()


async def test_a_stalled_consumer_does_not_take_back_what_another_claimed(
    redis_client: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    """A stalls past the claim idle holding a batch; B (the partition's new lease holder)
    claims it. A's keep-alive must not take it back: it drops the ids. Both then write:
    B the first entry, then A (waking up) its whole batch. Nothing is stored twice, and
    the ``?wait=`` marker of the first entry keeps the counts of the write that stored it
    (B's), not A's duplicates."""

    def reader(name: str) -> Reader:
        settings = make_settings(
            tmp_path, partitions=1, consumer_name=name, claim_idle_ms=CLAIM_IDLE_MS
        )
        return Reader(redis_client, ndjson_store, settings, ConsumerMetrics())

    a, b = reader("a"), reader("b")
    layout = a.layout
    stream = layout.stream(0)
    await ensure_group(redis_client, layout)
    added = await add_bundles(
        redis_client, layout, [f.attempt_lifecycle(f"s{i}", "t") for i in range(3)]
    )
    batch = await a.read_once(0)
    a.states[0].take(i for i, _ in batch)  # A works on them ... and stalls
    await asyncio.sleep(CLAIM_IDLE_MS / 1000 + 0.05)
    assert await b.ownership.acquire(0)
    assert await b.take_over(0, CLAIM_IDLE_MS) == 3
    assert await keepalive.refresh(redis_client, layout, "a", a.states[0]) == 0
    assert not a.states[0].held  # dropped, not stolen back
    assert {owner for owner, _ in (await deliveries(redis_client, stream)).values()} == {"b"}
    first = await b.read_pending(0)
    assert first is not None
    await b.handle_alone(0, first)
    await a.handle_batch(0, batch)  # A wakes up and finishes its write
    assert await b.read_pending(0) is None  # A acked the rest: B has nothing left
    assert await deliveries(redis_client, stream) == {}
    events = [e.event_id async for e in ndjson_store.iter_events()]
    assert len(events) == len(set(events)) == 15
    for p, entry_id in added:
        marker = await resolve(redis_client.get(layout.committed_key(p, entry_id)))
        assert marker == b"5.0.0.0"  # five new events each, as whoever stored them saw
    assert a.metrics.duplicates._value.get() == 5
