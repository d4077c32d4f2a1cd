"""The forwarder never skips silently: entries trimmed before it sent them are counted and
logged, and a forwarder seen recently keeps its entries (real Redis).

The scenario: a forwarder sent the first entries of a partition, read two more (pending)
and went away; the storage writers acked most of the stream. Trimming leaves out a
forwarding group far behind only when none of its consumers was seen recently, so:

- seen long ago (abandoned): the prefix is trimmed past the forwarder's position; when it
  comes back it reports exactly the trimmed entries it never sent — the two pending ones
  and the gap after its last-delivered id — as ``leviathan_spider_skipped_total
  {reason="trimmed"}`` and in the log, and forwards the rest;
- seen recently (down for a deploy, restarting in a crash loop): nothing it needs is
  trimmed and every entry is forwarded.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consumer import maintenance
from consumer.forwarder.forward import Forwarder
from consumer.forwarder.stream import PartitionStream
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader
from storage.config import create_store
from storage.queue import GROUP, StreamLayout, resolve
from tests.consumer.conftest import make_settings
from tests.consumer.forwarder_support import (
    SpiderSink,
    forwarder,
    metric,
    spider_settings,
    stream_ids,
    until,
)
from tests.consumer.process_support import bundles, prefill

pytestmark = pytest.mark.integration

TOTAL, SENT, READ, WRITERS_ACKED = 20, 4, 6, 15


async def _forwarder_went_away(redis: Redis, layout: StreamLayout) -> list[str]:
    """20 entries: the forwarder ``f1`` sent 4 and holds 2 pending; the writers acked 15."""
    stream = layout.stream(0)
    await prefill(redis, layout, bundles(TOTAL))
    ids = (await stream_ids(redis, layout))[0]
    await PartitionStream(redis, layout, 0, "spider", "f1", 10).ensure_group("earliest")
    await resolve(redis.xreadgroup("spider", "f1", {stream: ">"}, count=READ))
    await resolve(redis.xack(stream, "spider", *ids[:SENT]))
    await resolve(redis.xgroup_create(stream, GROUP, id="0"))
    await resolve(redis.xreadgroup(GROUP, "c1", {stream: ">"}))
    await resolve(redis.xack(stream, GROUP, *ids[:WRITERS_ACKED]))
    return ids


async def _run_until_sent(fwd: Forwarder, sink: SpiderSink, n: int) -> None:
    await sink.start()
    task = asyncio.create_task(fwd.run())
    try:
        await until(lambda: len(sink.accepted) >= n, 20, f"{n} bundles forwarded")
        await asyncio.sleep(0.2)  # nothing more arrives
    finally:
        fwd.stop()
        await asyncio.wait_for(task, 10)
        await sink.stop()


async def test_entries_trimmed_past_an_idle_forwarder_are_counted_and_logged(
    redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    layout = StreamLayout(partitions=1)
    stream = layout.stream(0)
    ids = await _forwarder_went_away(redis_client, layout)
    await asyncio.sleep(0.05)
    # 16 behind, over a bound of 5, not seen for 10 ms: left out, the prefix is trimmed
    caplog.set_level(logging.WARNING)
    assert await maintenance.trim_partition(redis_client, stream, abandon_after=5, seen_ms=10) == (
        WRITERS_ACKED
    )
    assert any("left out of trimming" in r.getMessage() for r in caplog.records)

    sink = SpiderSink()
    fwd = forwarder(redis_client, layout, spider_settings(sink.url))
    await _run_until_sent(fwd, sink, TOTAL - WRITERS_ACKED)

    assert [r.entry_id for r in sink.accepted] == ids[WRITERS_ACKED:]
    # exactly the entries it never sent: 2 pending + the 9 after its last-delivered id
    assert metric(fwd, "leviathan_spider_skipped_total", reason="trimmed") == (WRITERS_ACKED - SENT)
    assert metric(fwd, "leviathan_spider_skipped_total", reason="backlog") == 0
    lines = [r.getMessage() for r in caplog.records if "were trimmed" in r.getMessage()]
    assert len(lines) == 2, lines
    assert any(f"9 unsent bundles after {ids[READ - 1]} were trimmed" in x for x in lines)
    assert any(f"2 pending bundles ({ids[SENT]} .. {ids[READ - 1]})" in x for x in lines)
    # the gap is written off: the group's lag is true again, nothing is counted twice
    rows = await resolve(redis_client.xinfo_groups(stream))
    spider = next(r for r in rows if r["name"] in ("spider", b"spider"))
    assert (spider["lag"], spider["pending"]) == (0, 0)


async def test_a_forwarder_seen_recently_keeps_its_entries(redis_client: Redis) -> None:
    layout = StreamLayout(partitions=1)
    stream = layout.stream(0)
    ids = await _forwarder_went_away(redis_client, layout)
    # as far behind, but its consumer read moments ago (a deploy, a crash loop)
    trimmed = await maintenance.trim_partition(
        redis_client, stream, abandon_after=5, seen_ms=60_000
    )
    assert trimmed == SENT  # only what it had sent
    sink = SpiderSink()
    fwd = forwarder(redis_client, layout, spider_settings(sink.url))
    await _run_until_sent(fwd, sink, TOTAL - SENT)

    assert [r.entry_id for r in sink.accepted] == ids[SENT:]
    assert metric(fwd, "leviathan_spider_skipped_total", reason="trimmed") == 0


@pytest.mark.parametrize(("abandon_after_s", "trimmed"), [(60.0, SENT), (0.01, WRITERS_ACKED)])
async def test_the_consumers_trim_job_applies_the_abandon_setting(
    redis_client: Redis, tmp_path: Path, abandon_after_s: float, trimmed: int
) -> None:
    settings = make_settings(
        tmp_path, partitions=1, spider_max_backlog=3, spider_abandon_after_s=abandon_after_s
    )
    await _forwarder_went_away(redis_client, settings.layout)
    await asyncio.sleep(0.05)
    reader = Reader(redis_client, create_store(settings), settings, ConsumerMetrics())
    assert await maintenance.trim_all(reader) == trimmed
