"""The Spider forwarder against a local HTTP sink and the real Redis.

Spider down (connection refused), then 503s, then answers slower than the timeout, then
healthy: every bundle arrives at least once and in order per partition while the storage
writers beside it keep storing; a 4xx is dead-lettered with the answer and the partition
keeps flowing; the backlog bound skips, counts and logs the oldest unsent bundles; two
forwarders share partitions by lease and a crashed holder's entries are taken over.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from consumer import maintenance
from consumer.forwarder.forward import Forwarder
from consumer.forwarder.stream import BODY, STATUS
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader
from storage.base import EventStore
from storage.config import create_store
from storage.queue import StreamLayout, resolve
from tests.consumer.conftest import make_settings
from tests.consumer.forwarder_support import (
    SpiderSink,
    assert_in_order,
    forwarder,
    metric,
    spider_settings,
    stream_ids,
    until,
)
from tests.consumer.process_support import bundles, event_ids, prefill, wait_for

pytestmark = pytest.mark.integration


async def stop(fwd: Forwarder, task: asyncio.Task[None]) -> None:
    fwd.stop()
    await asyncio.wait_for(task, 10)


async def group_row(redis: Redis, layout: StreamLayout, p: int, group: str) -> dict[str, Any]:
    rows = await resolve(redis.xinfo_groups(layout.stream(p)))
    return next(dict(r) for r in rows if r["name"] == group.encode())


async def stored_all(store: EventStore, raws: list[dict[str, Any]], seconds: float) -> None:
    async def done() -> bool:
        return await store.count_events() == len(event_ids(raws))

    await wait_for(done, seconds, f"the writers to store {len(raws)} bundles")


async def test_every_bundle_arrives_in_order_through_outages_while_writers_store(
    redis_client: Redis, tmp_path: Path
) -> None:
    consumer_settings = make_settings(tmp_path, partitions=3, batch=20)
    layout = consumer_settings.layout
    reader = Reader(
        redis_client, create_store(consumer_settings), consumer_settings, ConsumerMetrics()
    )
    store = create_store(consumer_settings)  # a second handle on the files, to count
    await store.open()
    sink = SpiderSink(script=["503"] * 6 + ["slow"] * 3, slow_s=1.0)
    fwd = forwarder(redis_client, layout, spider_settings(sink.url))
    first = bundles(60, "early")
    await prefill(redis_client, layout, first)
    writers = asyncio.create_task(reader.run())
    task = asyncio.create_task(fwd.run())
    try:
        # Spider is down: the writers store everything, the forwarder only retries
        await stored_all(store, first, 30)
        await until(
            lambda: metric(fwd, "leviathan_spider_failed_total", reason="connection") >= 3,
            10,
            "connection failures",
        )
        assert sink.accepted == []
        assert fwd.unreachable_for() > 0
        assert metric(fwd, "leviathan_spider_forwarded_total") == 0

        await sink.start()  # now 503s, then answers after the timeout, then healthy
        later = bundles(30, "late")
        await prefill(redis_client, layout, later)
        expected = await stream_ids(redis_client, layout)
        total = sum(len(v) for v in expected.values())
        await until(
            lambda: len({(r.partition, r.entry_id) for r in sink.accepted}) == total,
            60,
            "every bundle at the sink",
        )
        await stored_all(store, first + later, 30)
    finally:
        await stop(fwd, task)
        reader.stop()
        await asyncio.wait_for(writers, 10)
        await sink.stop()
        await store.close()

    got = sink.by_partition()
    for p, ids in expected.items():
        assert set(got[p]) == set(ids)
        assert_in_order(got[p])
    # each POST body is the normalised bundle of its entry, with the JSON content type
    fields = {
        p: dict(await resolve(redis_client.xrange(layout.stream(p))))
        for p in range(layout.partitions)
    }
    for r in sink.accepted:
        assert r.raw == fields[r.partition][r.entry_id.encode()][b"bundle"]
        assert r.headers["Content-Type"] == "application/json"
        assert "Authorization" not in r.headers
    assert {r.bundle["bundle_id"] for r in sink.accepted} == {
        raw["bundle_id"] for raw in first + later
    }
    assert sink.answers.count("503") == 6
    assert sink.answers.count("slow") == 3
    for reason in ("connection", "5xx", "timeout"):
        assert metric(fwd, "leviathan_spider_failed_total", reason=reason) > 0, reason
    assert metric(fwd, "leviathan_spider_forwarded_total") >= total
    assert fwd.failing_since is None
    for p in range(layout.partitions):
        row = await group_row(redis_client, layout, p, "spider")
        assert row["pending"] == 0
        assert row["lag"] == 0
        assert metric(fwd, "leviathan_spider_lag", partition=str(p)) == 0


async def test_refused_bundle_is_dead_lettered_with_the_answer_and_the_partition_flows(
    redis_client: Redis,
) -> None:
    layout = StreamLayout(partitions=1)
    # a wrong token (401) and "come back later" (429) are retried, never dead-lettered
    raws = bundles(8)
    refused = raws[3]["bundle_id"]
    sink = SpiderSink(script=["401", "429"], refuse={refused})
    await sink.start()
    settings = spider_settings(sink.url, spider_token="s3cret")
    fwd = forwarder(redis_client, layout, settings)
    await prefill(redis_client, layout, raws)
    ids = (await stream_ids(redis_client, layout))[0]
    task = asyncio.create_task(fwd.run())
    try:
        await until(lambda: len(sink.accepted) == 7, 20, "the other seven bundles")
    finally:
        await stop(fwd, task)
        await sink.stop()

    assert [r.bundle["bundle_id"] for r in sink.accepted] == [
        raw["bundle_id"] for raw in raws if raw["bundle_id"] != refused
    ]
    assert_in_order([r.entry_id for r in sink.accepted])
    assert all(r.headers["Authorization"] == "Bearer s3cret" for r in sink.accepted)
    dead = await resolve(redis_client.xrange(layout.spider_dead(0)))
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[STATUS] == b"422"
    assert f"bundle {refused} rejected: unknown event type".encode() in fields[BODY]
    assert fields[b"dead_entry_id"] == ids[3].encode()
    assert fields[b"dead_reason"] == b"spider refused: HTTP 422"
    assert orjson.loads(fields[b"bundle"])["bundle_id"] == refused
    assert metric(fwd, "leviathan_spider_dead_lettered_total") == 1
    assert metric(fwd, "leviathan_spider_failed_total", reason="401") == 1
    assert metric(fwd, "leviathan_spider_failed_total", reason="429") == 1
    row = await group_row(redis_client, layout, 0, "spider")
    assert row["pending"] == 0
    assert row["lag"] == 0


async def test_backlog_bound_skips_the_oldest_counts_and_logs_once(
    redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    layout = StreamLayout(partitions=1)
    sink = SpiderSink()  # down until started
    fwd = forwarder(redis_client, layout, spider_settings(sink.url, spider_max_backlog=5))
    await prefill(redis_client, layout, bundles(20))
    ids = (await stream_ids(redis_client, layout))[0]
    caplog.set_level(logging.WARNING, logger="consumer.forwarder")
    task = asyncio.create_task(fwd.run())
    try:
        await until(
            lambda: metric(fwd, "leviathan_spider_skipped_total", reason="backlog") == 15,
            10,
            "the skip",
        )
        await until(
            lambda: metric(fwd, "leviathan_spider_failed_total", reason="connection") >= 3,
            10,
            "more failed attempts",
        )
        await sink.start()
        await until(lambda: len(sink.accepted) == 5, 20, "the five newest bundles")
    finally:
        await stop(fwd, task)
        await sink.stop()

    assert [r.entry_id for r in sink.accepted] == ids[15:]
    assert metric(fwd, "leviathan_spider_skipped_total", reason="backlog") == 15
    # failed attempts are logged at 1, 2, 4, 8, …, not each one
    logged: dict[str, list[int]] = {}
    for record in caplog.records:
        match = re.search(r"POST of entry (\S+) failed .*attempt (\d+)\)", record.getMessage())
        if match:
            logged.setdefault(match.group(1), []).append(int(match.group(2)))
    assert set(logged) == {f"0:{ids[15]}"}  # skipped before the first read
    for attempts in logged.values():
        assert attempts == [2**i for i in range(len(attempts))]
    assert sum(len(a) for a in logged.values()) < metric(
        fwd, "leviathan_spider_failed_total", reason="connection"
    )
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert lines == [
        f"spider forwarder: partition 0 held 20 unsent bundles, over "
        f"LEVIATHAN_SPIDER_MAX_BACKLOG=5: skipped the 15 oldest ({ids[0]} .. {ids[14]}) unsent"
    ]
    assert metric(fwd, "leviathan_spider_lag", partition="0") == 0


async def test_backlog_bound_holds_while_bundles_keep_coming(redis_client: Redis) -> None:
    """Spider down while ingest keeps adding: the unsent backlog never grows past the bound
    for longer than one retry, and trimming (every group acked) keeps the stream short."""
    layout = StreamLayout(partitions=1)
    sink = SpiderSink()
    fwd = forwarder(redis_client, layout, spider_settings(sink.url, spider_max_backlog=10))
    task = asyncio.create_task(fwd.run())
    try:
        for round_ in range(5):
            await prefill(redis_client, layout, bundles(10, f"r{round_}"))
            await asyncio.sleep(0.3)
        await until(
            lambda: metric(fwd, "leviathan_spider_skipped_total", reason="backlog") == 40,
            10,
            "skips",
        )
        row = await group_row(redis_client, layout, 0, "spider")
        assert row["pending"] + row["lag"] == 10
        # no writers group here: the forwarder's group alone decides what may be trimmed
        await maintenance.trim_partition(redis_client, layout.stream(0))
        assert await resolve(redis_client.xlen(layout.stream(0))) == 10
    finally:
        await stop(fwd, task)


async def test_two_forwarders_share_partitions_and_a_crashed_holder_is_taken_over(
    redis_client: Redis,
) -> None:
    layout = StreamLayout(partitions=2)
    sink = SpiderSink()
    await sink.start()
    # a short lease so the take-over below happens within seconds
    settings = spider_settings(sink.url, spider_retry_max_s=0.1, spider_timeout_s=0.2)
    one = forwarder(redis_client, layout, settings, "one")
    two = forwarder(redis_client, layout, settings, "two")
    await prefill(redis_client, layout, bundles(40))
    tasks = [asyncio.create_task(one.run())]

    async def leased() -> bool:
        return all([await resolve(redis_client.exists(layout.spider_lease(p))) for p in (0, 1)])

    try:
        await wait_for(leased, 10, "the first forwarder to take both leases", interval=0.01)
        tasks.append(asyncio.create_task(two.run()))  # stands by
        await until(lambda: len(sink.accepted) == 40, 20, "the first 40 bundles")
        # nothing failed, so nothing was sent twice: one forwarder per partition
        assert len(sink.accepted) == 40
        assert metric(two, "leviathan_spider_forwarded_total") == 0
        # Spider goes away; the holders read new entries and keep them pending; then the
        # first holder dies without releasing anything
        await sink.stop()
        await prefill(redis_client, layout, bundles(20, "after"))
        await until(
            lambda: metric(one, "leviathan_spider_failed_total", reason="connection") >= 2,
            10,
            "the holder to fail",
        )
        tasks[0].cancel()
        await asyncio.gather(tasks[0], return_exceptions=True)
        await sink.start()
        expected = await stream_ids(redis_client, layout)
        await until(
            lambda: len({(r.partition, r.entry_id) for r in sink.accepted}) == 60,
            settings.spider_lease_s + 20,
            "the dead holder's partitions to be taken over",
        )
    finally:
        await stop(two, tasks[1])
        await one.client.close()
        await sink.stop()
    assert metric(two, "leviathan_spider_forwarded_total") >= 20
    # the dead holder no longer reports a lag for partitions it does not send
    for label in ("0", "1"):
        lag = one.metrics.registry.get_sample_value("leviathan_spider_lag", {"partition": label})
        assert lag is None
    got = sink.by_partition()
    for p in range(2):
        assert set(got[p]) == set(expected[p])
        assert_in_order(got[p])
    for p in range(2):
        row = await group_row(redis_client, layout, p, "spider")
        assert row["pending"] == 0


async def test_group_created_at_latest_skips_what_came_before(redis_client: Redis) -> None:
    layout = StreamLayout(partitions=1)
    sink = SpiderSink()
    await sink.start()
    fwd = forwarder(redis_client, layout, spider_settings(sink.url, spider_start="latest"))
    await prefill(redis_client, layout, bundles(3, "old"))
    task = asyncio.create_task(fwd.run())
    try:
        await wait_for(
            lambda: _has_group(redis_client, layout.stream(0)), 10, "the group", interval=0.02
        )
        new = bundles(2, "new")
        await prefill(redis_client, layout, new)
        await until(lambda: len(sink.accepted) == 2, 10, "the new bundles")
        await asyncio.sleep(0.2)
    finally:
        await stop(fwd, task)
        await sink.stop()
    assert [r.bundle["bundle_id"] for r in sink.accepted] == [raw["bundle_id"] for raw in new]


async def _has_group(redis: Redis, stream: str) -> bool:
    return bool(await resolve(redis.xinfo_groups(stream)))
