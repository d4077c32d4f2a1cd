"""The forwarder's parts: answer classification, settings refusals, its health app,
``leviathan-cp forward --remove-group`` and trimming with the forwarder's group."""

from __future__ import annotations

import asyncio
import time

import pytest
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from consumer import maintenance
from consumer.__main__ import main as consumer_main
from consumer.forwarder.health import create_app
from consumer.forwarder.http import SpiderClient, classify
from consumer.forwarder.main import main as forward_main
from consumer.forwarder.stream import PartitionStream
from storage.queue import GROUP, StreamLayout, resolve
from tests.consumer.forwarder_support import forwarder, spider_settings
from tests.consumer.process_support import bundles, prefill


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "ok"),
        (202, "ok"),
        (204, "ok"),
        (400, "refused"),
        (413, "refused"),
        (422, "refused"),
        (401, "retry"),
        (403, "retry"),
        (404, "retry"),
        (408, "retry"),
        (429, "retry"),
        (301, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
    ],
)
def test_answers_are_sorted_into_ack_dead_letter_or_retry(status: int, kind: str) -> None:
    assert classify(status, b"why").kind == kind


def test_refused_answer_keeps_its_status_and_body() -> None:
    answer = classify(422, b'{"detail": "bad"}')
    assert answer.status == 422
    assert answer.body == b'{"detail": "bad"}'
    assert answer.describe() == 'HTTP 422: {"detail": "bad"}'
    assert classify(503, b"").reason == "5xx"
    assert classify(429, b"").reason == "429"


def _one_stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert "Traceback" not in out.err
    return lines[0]


def test_consumer_with_forwarding_enabled_but_no_url_refuses_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEVIATHAN_SPIDER_ENABLED", "true")
    monkeypatch.delenv("LEVIATHAN_SPIDER_URL", raising=False)
    assert consumer_main([]) == 2
    line = _one_stderr_line(capsys)
    assert "LEVIATHAN_SPIDER_ENABLED=true needs LEVIATHAN_SPIDER_URL" in line


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "LEVIATHAN_SPIDER_URL"),
        ({"LEVIATHAN_SPIDER_URL": "ftp://spider"}, "LEVIATHAN_SPIDER_URL"),
        (
            {"LEVIATHAN_SPIDER_URL": "http://s", "LEVIATHAN_SPIDER_TIMEOUT_SECONDS": "0"},
            "LEVIATHAN_SPIDER_TIMEOUT_SECONDS",
        ),
        (
            {"LEVIATHAN_SPIDER_URL": "http://s", "LEVIATHAN_SPIDER_START": "middle"},
            "LEVIATHAN_SPIDER_START",
        ),
    ],
)
def test_forward_command_refuses_bad_settings_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    named: str,
) -> None:
    monkeypatch.delenv("LEVIATHAN_SPIDER_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert forward_main([]) == 2
    assert named in _one_stderr_line(capsys)


async def test_health_app_reports_stall_spider_failure_and_draining(
    fake_redis: Redis, aiohttp_client: AiohttpClient
) -> None:
    fwd = forwarder(fake_redis, StreamLayout(partitions=1), spider_settings("http://127.0.0.1:9"))
    client = await aiohttp_client(create_app(fwd))
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    fwd.failing_since = time.monotonic() - 5  # below LEVIATHAN_SPIDER_UNREADY_AFTER_S
    assert (await client.get("/readyz")).status == 200
    fwd.failing_since = time.monotonic() - fwd.settings.spider_unready_after_s - 1
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["problems"][0].startswith("spider: failing for")
    fwd.failing_since = None
    fwd.metrics.lag.labels("0").set(7)
    assert 'leviathan_spider_lag{partition="0"} 7.0' in await (await client.get("/metrics")).text()
    fwd.heartbeat = time.monotonic() - fwd.settings.spider_heartbeat_max_age_s - 1
    assert (await client.get("/healthz")).status == 503
    fwd.stop()
    assert "draining" in (await (await client.get("/readyz")).json())["problems"]


@pytest.mark.integration
async def test_trim_keeps_what_the_forwarder_has_not_acked(redis_client: Redis) -> None:
    layout = StreamLayout(partitions=1)
    stream = layout.stream(0)
    await prefill(redis_client, layout, bundles(6))
    ids = [i.decode() for i, _ in await resolve(redis_client.xrange(stream))]
    await resolve(redis_client.xgroup_create(stream, GROUP, id="0"))
    spider = PartitionStream(redis_client, layout, 0, "spider", "f1", 10)
    await spider.ensure_group("earliest")
    # the writers acked everything; the forwarder sent two and holds the third
    await resolve(redis_client.xreadgroup(GROUP, "c1", {stream: ">"}))
    await resolve(redis_client.xack(stream, GROUP, *ids))
    entries, _ = await spider.read(">", 3, 10)
    await spider.ack([i for i, _ in entries[:2]])
    assert await maintenance.trim_partition(redis_client, stream) == 2
    assert [i.decode() for i, _ in await resolve(redis_client.xrange(stream))] == ids[2:]
    await spider.ack([entries[2][0]])  # no pending: just past its last-delivered id
    assert await maintenance.trim_partition(redis_client, stream) == 1
    assert [i.decode() for i, _ in await resolve(redis_client.xrange(stream))] == ids[3:]


@pytest.mark.integration
def test_remove_group_deletes_the_group_and_leases(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = StreamLayout(partitions=2)

    async def setup() -> None:
        async with Redis.from_url(redis_url) as redis:
            await prefill(redis, layout, bundles(4))
            for p in range(2):
                part = PartitionStream(redis, layout, p, "spider", "f1", 10)
                await part.ensure_group("earliest")
            await resolve(redis.set(layout.spider_lease(0), b"someone"))

    async def groups_and_lease() -> tuple[list[object], int]:
        async with Redis.from_url(redis_url) as redis:
            groups = [await resolve(redis.xinfo_groups(s)) for s in layout.streams()]
            return groups, int(await resolve(redis.exists(layout.spider_lease(0))))

    asyncio.run(setup())
    monkeypatch.setenv("LEVIATHAN_REDIS_URL", redis_url)
    monkeypatch.setenv("LEVIATHAN_PARTITIONS", "2")
    monkeypatch.delenv("LEVIATHAN_SPIDER_URL", raising=False)
    assert forward_main(["--remove-group"]) == 0
    assert capsys.readouterr().out.strip() == "removed group 'spider' from 2 partition(s)"
    assert asyncio.run(groups_and_lease()) == ([[], []], 0)


def test_blank_token_sends_no_authorization_and_url_is_normalised() -> None:
    settings = spider_settings("http://spider:8080/", spider_token=" ")
    assert settings.spider_token is None
    assert settings.spider_ingest_url == "http://spider:8080/v1/events/ingest"
    assert "Authorization" not in SpiderClient(settings).headers
    with_token = spider_settings("https://spider", spider_token="t")
    assert SpiderClient(with_token).headers["Authorization"] == "Bearer t"


@pytest.mark.integration
async def test_trim_leaves_out_a_forwarder_group_nobody_reads(redis_client: Redis) -> None:
    layout = StreamLayout(partitions=1)
    stream = layout.stream(0)
    await prefill(redis_client, layout, bundles(25))
    await resolve(redis_client.xgroup_create(stream, GROUP, id="0"))
    reply = await resolve(redis_client.xreadgroup(GROUP, "c1", {stream: ">"}))
    ids = [i for i, _ in reply[0][1]]
    await resolve(redis_client.xack(stream, GROUP, *ids))
    await PartitionStream(redis_client, layout, 0, "spider", "f1", 10).ensure_group("earliest")
    # 25 unsent: within the bound, the forwarder's group keeps them all
    assert await maintenance.trim_partition(redis_client, stream, abandon_after=30) == 0
    # past it: a running forwarder would have skipped them, so nobody reads this group
    assert await maintenance.trim_partition(redis_client, stream, abandon_after=20) == 25
    assert await resolve(redis_client.xlen(stream)) == 0
