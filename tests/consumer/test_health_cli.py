"""Health endpoints, the ``dlq`` admin command and the entry point's settings errors."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from consumer import deadletter, dlq
from consumer.__main__ import main as consumer_main
from consumer.health import create_app
from consumer.reader import Reader
from storage.queue import GROUP, StreamLayout, resolve
from tests import factories as f
from tests.consumer.conftest import FlakyStore, add_bundles


async def test_health_endpoints(reader: Reader, aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app(reader, reader.metrics))
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    reader.metrics.events_written.inc(3)
    body = await (await client.get("/metrics")).text()
    assert "leviathan_consumer_events_written_total 3.0" in body
    assert 'leviathan_consumer_partition_stalled{partition="0"} 0.0' in body
    # a storage failure is a readiness matter, never a liveness one
    reader.storage_ok, reader.storage_problem = False, "storage: StorageUnavailable: gone"
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (
        "last batch attempt failed (storage: StorageUnavailable: gone); retrying"
        in (await ready.json())["problems"]
    )
    reader.storage_ok = True
    reader.stop()
    assert "draining" in (await (await client.get("/readyz")).json())["problems"]


async def test_liveness_fails_when_a_partition_task_died(
    reader: Reader, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(create_app(reader, reader.metrics))

    async def crashes() -> None:
        raise RuntimeError("bug (test)")

    reader.states[1].task = asyncio.create_task(crashes())
    await asyncio.sleep(0)
    with contextlib.suppress(RuntimeError):
        await reader.states[1].task
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert await resp.json() == {"status": "dead", "tasks": ["partition 1"]}
    reader.stop()  # a drain ends the tasks on purpose: not a liveness failure
    assert (await client.get("/healthz")).status == 200


async def test_a_partition_holding_entries_without_progress_is_stalled(
    reader: Reader, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(create_app(reader, reader.metrics))
    state = reader.states[1]
    state.take(["1-0", "2-0"])
    state.last_progress -= reader.settings.stall_s + 5  # held, nothing committed since
    ready = await client.get("/readyz")
    assert ready.status == 503
    problems = (await ready.json())["problems"]
    assert any(p.startswith("partition 1 stalled") for p in problems), problems
    body = await (await client.get("/metrics")).text()
    assert 'leviathan_consumer_partition_stalled{partition="1"} 1.0' in body
    assert 'leviathan_consumer_partition_stalled{partition="0"} 0.0' in body
    assert (await client.get("/healthz")).status == 200  # alive, just not progressing
    state.finished(["1-0"])  # progress: a commit
    body = await (await client.get("/metrics")).text()
    assert 'leviathan_consumer_partition_stalled{partition="1"} 0.0' in body
    assert (await client.get("/readyz")).status == 200


async def test_readyz_reports_unreachable_storage(
    reader: Reader, aiohttp_client: AiohttpClient
) -> None:
    await reader.store.close()  # a closed store cannot serve: ping raises
    reader.store = FlakyStore(reader.store, failures=0)
    client = await aiohttp_client(create_app(reader, reader.metrics))
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert any(p.startswith("storage") for p in (await resp.json())["problems"])
    await reader.store.open()


async def _dead_entries(redis: Redis, layout: StreamLayout) -> list[str]:
    await resolve(redis.xgroup_create(layout.stream(0), GROUP, id="0", mkstream=True))
    [(p, entry_id)] = await add_bundles(redis, layout, [f.body("t", "b0", [f.event("x", {})])])
    fields = (await resolve(redis.xrange(layout.stream(p))))[0][1]
    await resolve(redis.xreadgroup(GROUP, "c", {layout.stream(p): ">"}))
    await deadletter.move(
        redis, layout, p, [deadletter.for_entry(p, entry_id, fields, "max_deliveries: test")]
    )
    return [f"{p}/{i.decode()}" for i, _ in await resolve(redis.xrange(layout.dead_stream(p)))]


async def test_dlq_replay_puts_the_envelope_back_and_removes_the_dead_entry(
    fake_redis: Redis,
) -> None:
    layout = StreamLayout(partitions=1)
    dead_ids = await _dead_entries(fake_redis, layout)
    lines = await dlq.listing(fake_redis, layout, 10)
    assert lines[0].split("\t")[0] == dead_ids[0]
    assert lines[0].split("\t")[3:] == ["max_deliveries: test", "entry"]
    result = await dlq.replay(fake_redis, layout, None)
    assert result.replayed == 1
    assert await dlq.count(fake_redis, layout) == 0
    stream = await resolve(fake_redis.xrange(layout.stream(0)))
    replayed = stream[-1][1]
    assert set(replayed) == {b"v", b"bundle", b"received_at", b"token"}
    assert stream[0][1] == replayed


async def test_dlq_handles_the_old_single_stream_and_keeps_conflict_records(
    fake_redis: Redis,
) -> None:
    """Entries of the single dead stream of earlier releases stay listable and replayable;
    their conflict records (one event, no envelope) are never replayed."""
    layout = StreamLayout(partitions=1)
    [moved] = await _dead_entries(fake_redis, layout)
    fields = (await resolve(fake_redis.xrange(layout.dead_stream(0))))[0][1]
    await dlq.drop(fake_redis, layout, [moved])
    old_id = (await resolve(fake_redis.xadd(layout.legacy_dead, fields))).decode()
    conflict = {b"dead_reason": b"conflict", b"dead_partition": b"0", b"event_id": b"e-1"}
    conflict_id = (await resolve(fake_redis.xadd(layout.legacy_dead, conflict))).decode()  # type: ignore[arg-type]
    lines = await dlq.listing(fake_redis, layout, 10)
    assert [line.split("\t")[0] for line in lines] == [f"legacy/{old_id}", f"legacy/{conflict_id}"]
    result = await dlq.replay(fake_redis, layout, None)
    assert (result.replayed, result.skipped) == (1, [f"legacy/{conflict_id}"])
    assert await resolve(fake_redis.xlen(layout.stream(0))) == 2  # original + replayed
    assert await dlq.drop(fake_redis, layout, [conflict_id]) == 1  # a bare id works too
    assert await dlq.count(fake_redis, layout) == 0
    assert await dlq.drop(fake_redis, layout, None) == 0


async def test_dlq_refuses_an_ambiguous_bare_id(fake_redis: Redis) -> None:
    layout = StreamLayout(partitions=2)
    fields = {b"dead_reason": b"undecodable: test", b"dead_partition": b"0"}
    for key in (layout.dead_stream(0), layout.dead_stream(1)):
        await resolve(fake_redis.xadd(key, fields, id="5-0"))  # type: ignore[arg-type]
    with pytest.raises(dlq.DlqError, match="0/5-0, 1/5-0"):
        await dlq.drop(fake_redis, layout, ["5-0"])
    assert await dlq.drop(fake_redis, layout, ["1/5-0"]) == 1
    assert await dlq.drop(fake_redis, layout, ["5-0"]) == 1
    with pytest.raises(dlq.DlqError, match="no partition 7"):
        await dlq.drop(fake_redis, layout, ["7/5-0"])


@pytest.mark.integration
def test_dlq_command_line(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    async def seed() -> list[str]:
        client = Redis.from_url(redis_url)
        try:
            return await _dead_entries(client, StreamLayout(partitions=1))
        finally:
            await client.aclose()

    dead_ids = asyncio.run(seed())
    monkeypatch.setenv("LEVIATHAN_REDIS_URL", redis_url)
    monkeypatch.setenv("LEVIATHAN_PARTITIONS", "1")
    assert dlq.main(["list"]) == 0
    assert dead_ids[0] in capsys.readouterr().out
    assert dlq.main(["replay"]) == 2  # neither ids nor --all
    assert dlq.main(["replay", dead_ids[0]]) == 0
    assert "replayed 1" in capsys.readouterr().out
    assert dlq.main(["drop", "--all"]) == 0
    assert "dropped 0" in capsys.readouterr().out


def test_dlq_with_redis_down_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEVIATHAN_REDIS_URL", "redis://127.0.0.1:1/0")
    assert dlq.main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("cannot reach Redis: ")


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["replay", "nonsense"], "not a dead-entry handle"),
        (["drop", "12-3", "x-1"], "not a dead-entry handle"),
        (["drop", "3/x-1"], "not a dead-entry handle"),
        (["list", "--limit", "0"], "must be a whole number >= 1"),
    ],
)
def test_dlq_bad_arguments_are_refused_before_redis_is_asked(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        dlq.main(argv)
    assert exit_.value.code == 2
    assert complaint in capsys.readouterr().err


def test_bad_setting_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("LEVIATHAN_CONSUMER_BATCH", "lots")
    assert consumer_main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "LEVIATHAN_CONSUMER_BATCH" in err
    monkeypatch.delenv("LEVIATHAN_CONSUMER_BATCH")
    monkeypatch.setenv("LEVIATHAN_REDIS_URL", "http://nope")
    assert dlq.main(["list"]) == 2
    assert "LEVIATHAN_REDIS_URL" in capsys.readouterr().err
