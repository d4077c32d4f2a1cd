"""The real consumer process's peak memory stays bounded whatever one entry holds.

Entries are written straight to the stream (ingest may refuse such bodies; the consumer
must not blow up on what is in the stream anyway), then ``python -m consumer`` drains
them against a private Redis and the NDJSON store, and its peak RSS (VmHWM in
/proc/PID/status, read before it is stopped) is printed and held against the 640 MiB
target of a consumer pod (limit 768 Mi):

- one entry whose only event's payload is ~30 MiB of 10 million empty objects: decoding
  it would take about a gigabyte, over LEVIATHAN_CONSUMER_MEMORY_BYTES, so it is
  dead-lettered as ``oversized`` without being parsed;
- 40 entries of one ~4 MiB event each (430,000 small objects apiece): each is read,
  decoded and stored within the batch byte share and the memory budget.
"""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from consumer import deadletter
from storage.config import create_store
from storage.queue import resolve
from tests import factories as f
from tests.consumer.conftest import SettingsFactory, make_settings
from tests.consumer.process_support import backlog, consumer_env, start_consumer, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TARGET_MIB = 640


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def entry(bundle: bytes) -> dict[bytes, bytes]:
    return {b"v": b"1", b"bundle": bundle, b"received_at": b"1796000000.0", b"token": b"t"}


def one_event_bundle(bundle_id: str, payload: bytes) -> bytes:
    event = orjson.dumps(f.event("topo.indexed", {}, event_id=f"e-{bundle_id}"))
    event = event.replace(b'"payload":{}', b'"payload":' + payload)
    return b'{"target":"t","bundle_id":"' + bundle_id.encode() + b'","events":[' + event + b"]}"


async def drain_and_measure(
    settings_factory: SettingsFactory,
    redis: Redis,
    redis_url: str,
    tmp_path: Path,
    entries: list[dict[bytes, bytes]],
) -> tuple[float, int]:
    settings = settings_factory()
    stream = settings.layout.stream(0)
    for fields in entries:
        await resolve(redis.xadd(stream, fields))  # type: ignore[arg-type]
    proc = start_consumer(consumer_env(settings, redis_url), tmp_path / "consumer.log")
    try:

        async def drained() -> bool:
            return await backlog(redis, settings.layout) == 0

        await wait_for(drained, 240, "the entries to drain", interval=0.25)
        peak = peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    store = create_store(settings)
    await store.open()
    try:
        count = await store.count_events()
    finally:
        await store.close()
    return peak, count


async def test_ten_million_empty_objects_are_dead_lettered_not_decoded(
    redis_client: Redis, redis_url: str, tmp_path: Path
) -> None:
    n = 10_000_000
    payload = b'{"x":[' + b"{}," * (n - 1) + b"{}]}"
    bundle = one_event_bundle("empties", payload)
    assert len(bundle) > 28 * 1024 * 1024  # ~30 MB
    factory = lambda: make_settings(tmp_path, partitions=8)  # noqa: E731 (the defaults)
    peak, stored = await drain_and_measure(
        factory, redis_client, redis_url, tmp_path, [entry(bundle)]
    )
    del bundle, payload
    print(f"\nconsumer peak RSS, 10M empty objects in one entry: {peak:.0f} MiB")
    assert peak <= TARGET_MIB
    assert stored == 0
    dead = await resolve(redis_client.xrange(make_settings(tmp_path).layout.dead_stream(0)))
    assert len(dead) == 1
    reason = dead[0][1][deadletter.REASON].decode()
    assert reason.startswith("oversized: decoding it would take about ")
    assert "LEVIATHAN_CONSUMER_MEMORY_BYTES" in reason


async def test_forty_entries_of_one_4_mib_event_each_are_stored_within_the_bound(
    redis_client: Redis, redis_url: str, tmp_path: Path
) -> None:
    items = orjson.dumps({"items": [{"k": i % 1000} for i in range(430_000)]})
    assert len(items) > 4 * 1024 * 1024
    entries = [entry(one_event_bundle(f"big-{i}", items)) for i in range(40)]
    factory = lambda: make_settings(tmp_path, partitions=8, batch=200)  # noqa: E731
    peak, stored = await drain_and_measure(factory, redis_client, redis_url, tmp_path, entries)
    print(f"\nconsumer peak RSS, 40 entries of one 4 MiB event each: {peak:.0f} MiB")
    assert peak <= TARGET_MIB
    assert stored == 40
    dead = await resolve(redis_client.xlen(make_settings(tmp_path).layout.dead_stream(0)))
    assert dead == 0
