"""An entry that kills its writer, and two writers on one big bundle, with real processes.

The consumer is ``python -m tests.chaos.killer_consumer`` (the real consumer whose store
SIGKILLs the process on a marked event), restarted after every death against a private
Redis and each backend: every other entry is stored once and exactly the marked one is
dead-lettered as ``crashed its consumer N times``. Then two real consumer processes drain
a 20,000-event bundle (many chunk entries of one partition): its events are stored in the
order they were posted, because one lease holder writes the partition.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from consumer import crashes, deadletter
from consumer.settings import ConsumerSettings
from ingest.entry import chunk_fields, split_bundle
from storage.config import create_store
from storage.queue import StreamLayout, resolve
from storage.schema import Bundle
from tests import factories as f
from tests.chaos.killer_consumer import KILLER
from tests.consumer.conftest import make_settings
from tests.consumer.process_support import (
    ROOT,
    backlog,
    consumer_env,
    prefill,
    start_consumer,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(params=["ndjson", "postgres"])
def settings_for(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    extra: dict[str, Any] = {"backend": request.param}
    if request.param == "postgres":
        extra["postgres_dsn"] = request.getfixturevalue("postgres_url")
    return lambda **kw: make_settings(tmp_path, **{**extra, **kw})


def ids_in_partition(layout: StreamLayout, partition: int, n: int, prefix: str) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        bundle_id = f"{prefix}-{i}"
        if layout.partition_of(bundle_id) == partition:
            out.append(bundle_id)
        i += 1
    return out


def one_event(bundle_id: str, event_type: str = "attempt.heartbeat") -> dict[str, Any]:
    event = f.event(event_type, {"attempt_id": bundle_id, "n": 1}, event_id=f"e-{bundle_id}")
    return f.body("repo-a", bundle_id, [event])


def start_killer(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.killer_consumer"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )


async def test_an_entry_that_kills_its_writer_is_dead_lettered_alone(
    settings_for: Any, redis_client: Redis, redis_url: str, tmp_path: Path
) -> None:
    settings: ConsumerSettings = settings_for(
        partitions=4, batch=50, max_deliveries=3, consumer_name="crashy", lease_s=1
    )
    layout = settings.layout
    names = ids_in_partition(layout, 3, 11, "b")
    healthy = [one_event(n) for n in names[:5] + names[6:]]
    killer = one_event(names[5], KILLER)
    elsewhere = [one_event(n) for n in ids_in_partition(layout, 1, 5, "o")]
    await prefill(redis_client, layout, [*healthy[:5], killer, *healthy[5:], *elsewhere])
    env = consumer_env(settings, redis_url)
    log = tmp_path / "consumer.log"
    deaths = 0
    proc = start_killer(env, log)
    try:
        deadline = time.monotonic() + 120
        while await backlog(redis_client, layout) > 0:
            assert time.monotonic() < deadline, f"no drain after {deaths} deaths: {log}"
            code = proc.poll()
            if code is not None:
                assert code == -signal.SIGKILL, f"exit {code}, see {log}"
                deaths += 1
                assert deaths <= settings.max_deliveries + 1, "it kept dying"
                proc = start_killer(env, log)  # restarted, as the kubelet would
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # once in the first batch (with all of partition 3), then once per attempt alone
    assert deaths == settings.max_deliveries + 1
    dead = await resolve(redis_client.xrange(layout.dead_stream(3)))
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[deadletter.REASON] == b"crashed its consumer 3 times"
    assert orjson.loads(fields[b"bundle"])["bundle_id"] == names[5]
    for p in (0, 1, 2):
        assert await resolve(redis_client.xlen(layout.dead_stream(p))) == 0
    assert await crashes.deaths(redis_client, layout, 3) == {}
    store = create_store(settings)
    await store.open()
    try:
        stored = [e.event_id async for e in store.iter_events()]
    finally:
        await store.close()
    expected = [e["event_id"] for raw in healthy + elsewhere for e in raw["events"]]
    assert sorted(stored) == sorted(expected)  # every other entry, each once


async def test_a_big_bundle_is_stored_in_posted_order_by_two_consumer_processes(
    settings_for: Any, redis_client: Redis, redis_url: str, tmp_path: Path
) -> None:
    settings: ConsumerSettings = settings_for(partitions=2, batch=4, lease_s=2)
    layout = settings.layout
    events = [
        f.event("file.discovered", {"path": f"src/{i}.py"}, event_id=f"big-{i:05d}")
        for i in range(20_000)
    ]
    bundle = Bundle.model_validate(f.body("repo-a", "bootstrap-1", events))
    chunks = split_bundle(bundle, settings.entry_max_bytes)
    entries = chunk_fields(bundle.bundle_id, chunks, "test")
    assert len(entries) > 8, "the bundle must span many chunk entries"
    stream = layout.stream(layout.partition_of(bundle.bundle_id))
    procs = [
        start_consumer(consumer_env(settings, redis_url, HOSTNAME=name), tmp_path / f"{name}.log")
        for name in ("c1", "c2")
    ]
    try:
        await asyncio.sleep(3)  # both up; one holds the partition's lease, one stands by
        async with redis_client.pipeline(transaction=True) as pipe:
            for fields in entries:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            await pipe.execute()

        async def drained() -> bool:
            return await backlog(redis_client, layout) == 0

        await wait_for(drained, 120, "the bundle to drain")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert await asyncio.to_thread(proc.wait, 30) == 0
    store = create_store(settings)
    await store.open()
    try:
        stored = [e.event_id async for e in store.iter_events()]
    finally:
        await store.close()
    assert stored == [e["event_id"] for e in events]
