"""A batch whose write keeps hitting the database's statement timeout: retried a bounded
number of times, then isolated like a data error — the rest is stored, only the entry that
times out on its own is dead-lettered, and the partition flows on.

fakeredis streams, a real NDJSON store behind a wrapper that raises StorageTimeout (what
storage.postgres.errors makes of SQLSTATE 57014) for every batch holding a chosen bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from redis.asyncio import Redis

from consumer import deadletter
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, ensure_group
from storage.base import BatchResult, EventStore, StorageTimeout
from storage.envelope import Envelope
from storage.queue import resolve
from tests import factories as f
from tests.consumer.conftest import FlakyStore, add_bundles, make_settings


class SlowOn(FlakyStore):
    """Every batch holding bundle ``slow`` is cancelled by the statement timeout."""

    def __init__(self, inner: EventStore, slow: str) -> None:
        super().__init__(inner, failures=0)
        self.slow = slow

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        self.calls += 1
        if any(e.bundle.bundle_id == self.slow for e in envelopes):
            raise StorageTimeout("QueryCanceledError: canceling statement due to statement timeout")
        return await self.inner.write_batch(partition, envelopes)


async def test_a_batch_that_always_times_out_is_isolated_after_bounded_retries(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, partitions=1, batch=8, timeout_retries=2)
    store = SlowOn(ndjson_store, "bundle-att-3")
    reader = Reader(fake_redis, store, settings, ConsumerMetrics())
    await ensure_group(fake_redis, settings.layout)
    raws = [f.attempt_lifecycle(f"att-{i}", f"task-{i}") for i in range(8)]
    added = await add_bundles(fake_redis, settings.layout, raws)
    await reader.handle_batch(0, await reader.read_once(0))
    stored = {e.bundle_id async for e in ndjson_store.iter_events()}
    assert stored == {f"bundle-att-{i}" for i in range(8)} - {"bundle-att-3"}
    dead = await resolve(fake_redis.xrange(settings.layout.dead_stream(0)))
    assert [d[deadletter.ENTRY_ID].decode() for _, d in dead] == [added[3][1]]
    assert dead[0][1][deadletter.REASON].startswith(b"unstorable: StorageDataError")
    assert b"statement timeout" in dead[0][1][deadletter.REASON]
    # three timed-out attempts of the whole batch (the first and two retries), then the
    # isolating pass: the whole batch once more and log2(8) halvings down to the entry, then
    # the entry's events halved in turn (each event of it fails alone here, so at most two
    # writes per event)
    events = len(raws[3]["events"])
    assert 3 < store.calls <= 3 + 1 + 2 * 3 + 2 * events
    assert reader.metrics.storage_errors._value.get() == 3  # retried as transient 3 times


async def test_a_timeout_that_passes_is_only_retried(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, partitions=1, batch=8, timeout_retries=2)
    store = SlowOn(ndjson_store, "bundle-att-1")
    reader = Reader(fake_redis, store, settings, ConsumerMetrics())
    await ensure_group(fake_redis, settings.layout)
    await add_bundles(
        fake_redis, settings.layout, [f.attempt_lifecycle(f"att-{i}", "t") for i in range(4)]
    )
    entries = await reader.read_once(0)
    real = store.write_batch
    failures = 2  # the database was busy twice, then answers

    async def busy_then_fine(partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        nonlocal failures
        if failures:
            failures -= 1
            raise StorageTimeout("QueryCanceledError: statement timeout")
        return await ndjson_store.write_batch(partition, envelopes)

    store.write_batch = busy_then_fine  # type: ignore[method-assign]
    await reader.handle_batch(0, entries)
    store.write_batch = real  # type: ignore[method-assign]
    assert len({e.bundle_id async for e in ndjson_store.iter_events()}) == 4
    assert await resolve(fake_redis.xlen(settings.layout.dead_stream(0))) == 0
