"""Trimming and stale-consumer removal never lose an unacked or undelivered entry."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from consumer import maintenance
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, ensure_group
from storage.base import EventStore
from storage.queue import GROUP, resolve
from tests import factories as f
from tests.consumer.conftest import add_bundles, make_settings


def one_partition_reader(redis: Redis, store: EventStore, tmp_path: Path, name: str) -> Reader:
    settings = make_settings(tmp_path, partitions=1, consumer_name=name, batch=2)
    return Reader(redis, store, settings, ConsumerMetrics())


async def ids_in(redis: Redis, stream: str) -> list[str]:
    return [i.decode() for i, _ in await resolve(redis.xrange(stream))]


async def test_trim_keeps_pending_and_undelivered_entries(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    reader = one_partition_reader(fake_redis, ndjson_store, tmp_path, "c1")
    await ensure_group(fake_redis, reader.layout)
    stream = reader.layout.stream(0)
    raws = [f.attempt_lifecycle(f"a{i}", f"t{i}") for i in range(7)]
    await add_bundles(fake_redis, reader.layout, raws)
    all_ids = await ids_in(fake_redis, stream)
    await reader.handle_batch(0, await reader.read_once(0))  # acks 0,1
    held = await reader.read_once(0)  # 2,3 delivered, never acked
    await reader.handle_batch(0, await reader.read_once(0))  # acks 4,5; 6 undelivered
    assert [i for i, _ in held] == all_ids[2:4]
    removed = await maintenance.trim_partition(fake_redis, stream)
    assert removed == 2
    assert await ids_in(fake_redis, stream) == all_ids[2:]
    await reader.handle_batch(0, held)
    await maintenance.trim_partition(fake_redis, stream)
    assert await ids_in(fake_redis, stream) == all_ids[6:]  # acked all delivered; 6 stays
    await reader.handle_batch(0, await reader.read_once(0))
    await maintenance.trim_partition(fake_redis, stream)
    assert await ids_in(fake_redis, stream) == []
    assert await maintenance.trim_partition(fake_redis, "no-such-stream") == 0


async def test_stale_consumer_is_removed_only_after_its_entries_are_processed(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    dead_one = one_partition_reader(fake_redis, ndjson_store, tmp_path, "gone")
    await ensure_group(fake_redis, dead_one.layout)
    stream = dead_one.layout.stream(0)
    await add_bundles(fake_redis, dead_one.layout, [f.attempt_lifecycle("a", "t")])
    assert len(await dead_one.read_once(0)) == 1  # then it dies holding the entry
    live = Reader(
        fake_redis,
        ndjson_store,
        make_settings(tmp_path, partitions=1, consumer_name="live", stale_consumer_ms=1000),
        ConsumerMetrics(),
    )
    assert await maintenance.remove_stale_consumers(live) == []  # not idle long enough yet
    live.settings.stale_consumer_ms = 0  # now it is
    await asyncio.sleep(live.settings.claim_idle_ms / 1000 + 0.05)
    assert await maintenance.remove_stale_consumers(live) == ["gone"]
    names = [c["name"] for c in await resolve(fake_redis.xinfo_consumers(stream, GROUP))]
    assert b"gone" not in names
    # its entry is in our pending list now, which the partition task re-reads and writes
    handed = await live.read_pending(0)
    assert handed is not None
    await live.handle_alone(0, handed)
    assert int((await resolve(fake_redis.xpending(stream, GROUP)))["pending"]) == 0
    assert await ndjson_store.count_events() == 5


async def test_lag_gauge_counts_undelivered_entries(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    reader = one_partition_reader(fake_redis, ndjson_store, tmp_path, "c1")
    await ensure_group(fake_redis, reader.layout)
    await add_bundles(
        fake_redis, reader.layout, [f.attempt_lifecycle(f"a{i}", "t") for i in range(5)]
    )
    await reader.read_once(0)  # 2 delivered
    await maintenance.record_lag(reader, reader.metrics)
    assert reader.metrics.lag.labels("0")._value.get() == 3
    assert reader.metrics.pending.labels("0")._value.get() == 2


async def test_trim_keeps_what_any_group_still_needs(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    """A second group (a forwarder) that lags behind pins trimming at its own position."""
    reader = one_partition_reader(fake_redis, ndjson_store, tmp_path, "c1")
    await ensure_group(fake_redis, reader.layout)
    stream = reader.layout.stream(0)
    await resolve(fake_redis.xgroup_create(stream, "forwarder", id="0"))
    raws = [f.attempt_lifecycle(f"a{i}", f"t{i}") for i in range(6)]
    await add_bundles(fake_redis, reader.layout, raws)
    all_ids = await ids_in(fake_redis, stream)
    for _ in range(3):
        await reader.handle_batch(0, await reader.read_once(0))  # writers acked all six
    assert await maintenance.trim_partition(fake_redis, stream) == 0  # forwarder read none
    got = await resolve(fake_redis.xreadgroup("forwarder", "f1", {stream: ">"}, count=3))
    delivered = [i.decode() for i, _ in got[0][1]]
    await resolve(fake_redis.xack(stream, "forwarder", delivered[0], delivered[2]))
    assert await maintenance.trim_partition(fake_redis, stream) == 1  # its pending 2nd stays
    assert await ids_in(fake_redis, stream) == all_ids[1:]


async def test_trim_survives_pending_vanishing_and_groups_disappearing(
    fake_redis: Redis,
    ndjson_store: EventStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The pending entries are acked (or the group is destroyed) between XINFO and XPENDING,
    as another replica's read loop or an operator does under load."""
    reader = one_partition_reader(fake_redis, ndjson_store, tmp_path, "c1")
    await ensure_group(fake_redis, reader.layout)
    stream = reader.layout.stream(0)
    await add_bundles(fake_redis, reader.layout, [f.attempt_lifecycle("a", "t")])
    held = await reader.read_once(0)
    xpending = fake_redis.xpending

    async def acked_meanwhile(name: str, groupname: str) -> object:
        await resolve(fake_redis.xack(name, groupname, *[i for i, _ in held]))
        return await resolve(xpending(name, groupname))

    monkeypatch.setattr(fake_redis, "xpending", acked_meanwhile)
    assert await maintenance.trim_partition(fake_redis, stream) == 1
    assert await ids_in(fake_redis, stream) == []

    await add_bundles(fake_redis, reader.layout, [f.attempt_lifecycle("b", "t")])
    await reader.read_once(0)

    async def destroyed_meanwhile(name: str, groupname: str) -> object:
        await resolve(fake_redis.xgroup_destroy(name, groupname))
        return await resolve(xpending(name, groupname))

    monkeypatch.setattr(fake_redis, "xpending", destroyed_meanwhile)
    with caplog.at_level(logging.WARNING, logger="consumer.maintenance"):
        assert await maintenance.trim_partition(fake_redis, stream) == 0
    [record] = caplog.records
    assert record.getMessage().startswith(f"trim of {stream} skipped: ")
    assert record.exc_info is None  # one line, no traceback


@pytest.mark.integration
async def test_a_wrong_key_is_reported_not_read_as_missing(
    redis_client: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    """Only NOGROUP / no such key means "nothing there"; another refusal propagates."""
    reader = one_partition_reader(redis_client, ndjson_store, tmp_path, "me")
    await resolve(redis_client.set(reader.layout.stream(0), b"not a stream"))
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await maintenance.remove_stale_consumers(reader)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await maintenance.groups(redis_client, reader.layout.stream(0))
    await resolve(redis_client.delete(reader.layout.stream(0)))
    assert await maintenance.groups(redis_client, reader.layout.stream(0)) == []
    assert await maintenance.remove_stale_consumers(reader) == []
