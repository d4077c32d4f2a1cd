"""Bounded consumer memory, in parts: the decode-cost estimate, the process budget, a
read cut at the byte share whatever one entry's size, and an oversized entry
dead-lettered without being parsed (fakeredis, real NDJSON store)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from consumer import deadletter
from consumer.memory import MIB, Budget, estimate
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, ensure_group
from storage.base import EventStore
from storage.queue import resolve
from tests import factories as f
from tests.consumer.conftest import make_settings


def fields(bundle: bytes) -> dict[bytes, bytes]:
    return {b"v": b"1", b"bundle": bundle, b"received_at": b"1.0", b"token": b"t"}


def bundle_with(payload: Any, bundle_id: str = "b") -> bytes:
    event = f.event("x.y", payload, event_id=f"e-{bundle_id}")
    return orjson.dumps(f.body("t", bundle_id, [event]))


def test_the_estimate_follows_tokens_not_bytes() -> None:
    text = estimate(fields(bundle_with({"x": "a" * (4 * MIB)})))
    empties = estimate(fields(bundle_with({"x": [{}] * 1_000_000})))
    assert text < 3 * 4 * MIB  # a string costs about its bytes
    assert empties > 90 * MIB  # 3 MB of {},{},… are a million objects
    small = fields(bundle_with({"x": [{}] * 100}))
    assert estimate(small, plain_below=128 * 1024) == 2 * len(small[b"bundle"])


async def test_the_budget_lets_a_batch_wait_for_room_and_one_alone_through() -> None:
    budget = Budget(100)
    order: list[str] = []

    async def batch(name: str, cost: int, hold: float) -> None:
        async with budget.hold(cost):
            order.append(f"+{name}")
            await asyncio.sleep(hold)
            order.append(f"-{name}")

    await asyncio.gather(batch("a", 70, 0.05), batch("b", 60, 0.0), batch("huge", 500, 0.0))
    assert order.index("-a") < order.index("+b")  # b waited for a
    assert budget.used == 0


async def test_a_read_is_cut_at_the_share_and_the_rest_reread_one_at_a_time(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, partitions=1, batch=50, batch_bytes=200_000, entry_max_bytes=20_000
    )
    reader = Reader(fake_redis, ndjson_store, settings, ConsumerMetrics())
    await ensure_group(fake_redis, settings.layout)
    stream = settings.layout.stream(0)
    big = [bundle_with({"blob": "z" * 150_000}, f"big-{i}") for i in range(6)]
    ids = [(await resolve(fake_redis.xadd(stream, fields(b)))).decode() for b in big]  # type: ignore[arg-type]
    reader.states[0].reread = False
    first = await reader.read_once(0)
    assert [i for i, _ in first] == ids[:1]  # 150 KB: one fits the 200 KB share
    assert reader.states[0].reread  # the rest of that round stays pending
    assert reader.states[0].largest >= 150_000
    await reader.handle_batch(0, first)
    seen = []
    while entry := await reader.read_pending(0):
        seen.append(entry[0])
        await reader.handle_alone(0, entry)
    assert seen == ids[1:]  # in stream order
    later = [bundle_with({"blob": "z" * 150_000}, f"later-{i}") for i in range(3)]
    more = [(await resolve(fake_redis.xadd(stream, fields(b)))).decode() for b in later]  # type: ignore[arg-type]
    reader.states[0].reread = False
    rest = await reader.read_once(0)  # sized by the largest entry seen: one per round
    assert [i for i, _ in rest] == more[:1]
    assert not reader.states[0].reread  # nothing read beyond what fits


async def test_an_entry_that_cannot_be_decoded_within_the_budget_is_dead_lettered(
    fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, partitions=1, memory_bytes=16 * MIB)
    reader = Reader(fake_redis, ndjson_store, settings, ConsumerMetrics())
    await ensure_group(fake_redis, settings.layout)
    stream = settings.layout.stream(0)
    dense = bundle_with({"x": [{}] * 500_000}, "dense")
    fine = bundle_with({"x": "ok"}, "fine")
    for b in (dense, fine):
        await resolve(fake_redis.xadd(stream, fields(b)))  # type: ignore[arg-type]
    reader.states[0].reread = False
    await reader.handle_batch(0, await reader.read_once(0))
    assert {e.bundle_id async for e in ndjson_store.iter_events()} == {"fine"}
    dead = await resolve(fake_redis.xrange(settings.layout.dead_stream(0)))
    assert len(dead) == 1
    reason = dead[0][1][deadletter.REASON].decode()
    assert reason.startswith("oversized: decoding it would take about ")
    assert reason.endswith("over LEVIATHAN_CONSUMER_MEMORY_BYTES (16 MiB)")
