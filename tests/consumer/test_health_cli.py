"""Health endpoints, the ``dlq`` admin command and the entry point's settings errors."""

from __future__ import annotations

import time
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
    reader.heartbeat = time.monotonic() - 3600
    assert (await client.get("/healthz")).status == 503
    reader.storage_ok = False
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "storage: last write failed" in (await ready.json())["problems"]
    reader.storage_ok = True
    reader.stop()
    assert "draining" in (await (await client.get("/readyz")).json())["problems"]


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
    return [i.decode() for i, _ in await resolve(redis.xrange(layout.dead))]


async def test_dlq_replay_puts_the_envelope_back_and_removes_the_dead_entry(
    fake_redis: Redis,
) -> None:
    layout = StreamLayout(partitions=1)
    dead_ids = await _dead_entries(fake_redis, layout)
    lines = await dlq.listing(fake_redis, layout, 10)
    assert lines[0].split("\t")[0] == dead_ids[0]
    assert lines[0].endswith("max_deliveries: test")
    result = await dlq.replay(fake_redis, layout, None)
    assert result.replayed == 1
    assert await resolve(fake_redis.xlen(layout.dead)) == 0
    stream = await resolve(fake_redis.xrange(layout.stream(0)))
    replayed = stream[-1][1]
    assert set(replayed) == {b"v", b"bundle", b"received_at", b"token"}
    assert stream[0][1] == replayed


async def test_dlq_drop_and_conflicts_are_not_replayed(fake_redis: Redis) -> None:
    layout = StreamLayout(partitions=1)
    await _dead_entries(fake_redis, layout)
    conflict_fields = deadletter._meta(0, "1-0", "conflict")
    conflict_id = (await resolve(fake_redis.xadd(layout.dead, conflict_fields))).decode()  # type: ignore[arg-type]
    result = await dlq.replay(fake_redis, layout, None)
    assert (result.replayed, result.skipped) == (1, [conflict_id])
    assert await dlq.drop(fake_redis, layout, [conflict_id]) == 1
    assert await resolve(fake_redis.xlen(layout.dead)) == 0
    assert await dlq.drop(fake_redis, layout, None) == 0


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
        (["replay", "nonsense"], "not a stream entry id"),
        (["drop", "12-3", "x-1"], "not a stream entry id"),
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
