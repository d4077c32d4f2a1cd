"""Auth rotation, group commit, backpressure, Redis down, health/metrics, ?wait=, startup."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from fakeredis import FakeAsyncRedis
from redis.asyncio import Redis

from ingest.app import RUNTIME_KEY, create_app
from ingest.waiters import Waiters
from storage.envelope import decode
from storage.queue import GROUP, EntryCounts, PartitionMismatchError, announce_token, resolve
from tests.ingest.ingest_support import (
    AUTH,
    LAYOUT,
    ClientFactory,
    bundle_body,
    client_for,
    make_settings,
    raw,
    stream_entries,
)

URL = "/v1/events/ingest"


def _auth(token: str) -> dict[str, str]:
    return {**AUTH, "Authorization": f"Bearer {token}"}


async def test_two_tokens_accepted(aiohttp_client: ClientFactory) -> None:
    client = await client_for(aiohttp_client, make_settings(token=None, tokens="one, two"))
    for token, status in (("one", 202), ("two", 202), ("three", 401)):
        resp = await client.post(URL, data=raw(bundle_body()), headers=_auth(token))
        assert resp.status == status


async def test_token_file_rotated_while_running(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    path = tmp_path / "tokens"
    path.write_text("old-token\n")
    client = await client_for(aiohttp_client, make_settings(token=None, token_file=path))
    assert (
        await client.post(URL, data=raw(bundle_body()), headers=_auth("old-token"))
    ).status == 202
    path.write_text("new-token\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert (
        await client.post(URL, data=raw(bundle_body()), headers=_auth("old-token"))
    ).status == 401
    assert (
        await client.post(URL, data=raw(bundle_body()), headers=_auth("new-token"))
    ).status == 202


async def test_group_commit_200_concurrent(aiohttp_client: ClientFactory) -> None:
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(), redis)
    ids = [f"bundle-att-{i}" for i in range(200)]
    responses = await asyncio.gather(
        *(client.post(URL, data=raw(bundle_body(b, n=1)), headers=AUTH) for b in ids)
    )
    assert [r.status for r in responses] == [202] * 200
    seen = [decode(e.decode(), f).bundle.bundle_id for _, (e, f) in await stream_entries(redis)]
    assert sorted(seen) == sorted(ids)
    text = await (await client.get("/metrics")).text()
    count_line = next(
        x for x in text.splitlines() if x.startswith("ingest_xadd_pipeline_batch_count")
    )
    pipelines = float(count_line.split()[-1])
    assert 1 <= pipelines < 200


async def test_redis_down_is_503_with_retry_after(aiohttp_client: ClientFactory) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    settings = make_settings(redis_timeout_seconds=0.5)
    # startup needs Redis; the running app's client is swapped for an unreachable one
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, settings, redis)
    app = client.app
    assert app is not None
    rt = app[RUNTIME_KEY]
    rt.redis = dead
    rt.publisher._redis = dead
    rt.lag._redis = dead
    resp = await client.post(URL, data=raw(bundle_body()), headers=AUTH)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "Redis" in (await ready.json())["detail"]
    await dead.aclose()
    assert await stream_entries(redis) == []


async def test_lag_over_high_water_is_503(aiohttp_client: ClientFactory) -> None:
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(queue_high_water=3), redis)
    for i in range(4):
        resp = await client.post(URL, data=raw(bundle_body(f"b-{i}")), headers=AUTH)
        assert resp.status == 202
    resp = await client.post(URL, data=raw(bundle_body("b-x")), headers=AUTH)
    assert resp.status == 503
    assert resp.headers["Retry-After"]
    assert len(await stream_entries(redis)) == 4
    # once a consumer group has read everything, lag drops and ingest accepts again
    for p in range(LAYOUT.partitions):
        await resolve(redis.xgroup_create(LAYOUT.stream(p), GROUP, id="$", mkstream=True))
    resp = await client.post(URL, data=raw(bundle_body("b-y")), headers=AUTH)
    assert resp.status == 202


async def test_health_ready_metrics_without_token(aiohttp_client: ClientFactory) -> None:
    client = await client_for(aiohttp_client, make_settings())
    health = await client.get("/healthz")
    assert (health.status, await health.json()) == (200, {"status": "healthy"})
    ready = await client.get("/readyz")
    assert (ready.status, await ready.json()) == (200, {"status": "ready"})
    await client.post(URL, data=raw(bundle_body()), headers=AUTH)
    await client.post(URL, data=b"{", headers=AUTH)
    await client.post(URL, data=raw(bundle_body()))  # no token
    text = await (await client.get("/metrics")).text()
    # every outcome is counted with the status the client got, errors included
    for status in (202, 400, 401):
        assert f'ingest_requests_total{{route="/v1/events/ingest",status="{status}"}} 1.0' in text
    assert 'ingest_request_seconds_count{route="/v1/events/ingest"} 3.0' in text
    assert 'ingest_rejections_total{reason="bad_json"} 1.0' in text
    assert "ingest_bundle_events_count 1.0" in text
    assert "ingest_queue_lag" in text


async def test_partition_mismatch_refuses_to_start() -> None:
    redis = FakeAsyncRedis()
    await resolve(redis.hset(LAYOUT.meta, "partitions", "7"))
    app = create_app(make_settings(), redis=redis)
    from aiohttp import web

    runner = web.AppRunner(app)
    with pytest.raises(PartitionMismatchError, match="LEVIATHAN_PARTITIONS"):
        await runner.setup()
    await runner.cleanup()


async def _consumer(redis: Redis, counts: EntryCounts) -> None:
    """Simulated consumer: reads the one entry, marks and announces it finished."""
    while True:
        entries = await stream_entries(redis)
        if entries:
            break
        await asyncio.sleep(0.01)
    partition, (entry_id, _) = entries[0]
    key = LAYOUT.committed_key(partition, entry_id.decode())
    await resolve(redis.set(key, counts.encode(), ex=120))
    token = announce_token(partition, entry_id.decode(), counts)
    await resolve(redis.publish(LAYOUT.committed_channel, token))


@pytest.mark.parametrize(
    ("counts", "status"),
    [
        (EntryCounts(stored=1, duplicates=1), "ok"),
        (EntryCounts(revisions=2), "ok"),
        (EntryCounts(dead_lettered=2), "partial"),
    ],
)
async def test_wait_200_tells_what_the_consumer_did(
    aiohttp_client: ClientFactory, counts: EntryCounts, status: str
) -> None:
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(), redis)
    consumer = asyncio.create_task(_consumer(redis, counts))
    resp = await client.post(f"{URL}?wait=5", data=raw(bundle_body()), headers=AUTH)
    await consumer
    assert resp.status == 200
    assert await resp.json() == {
        "status": status,
        "bundle_id": "bundle-att-1",
        "ingested": 2,
        "stored": counts.stored,
        "revisions": counts.revisions,
        "duplicates": counts.duplicates,
        "dead_lettered": counts.dead_lettered,
    }


async def test_wait_all_sums_entries_and_sees_commits_from_before_it_listened() -> None:
    redis = FakeAsyncRedis()
    await resolve(redis.set(LAYOUT.committed_key(2, "5-0"), EntryCounts(3).encode(), ex=120))
    await resolve(redis.set(LAYOUT.committed_key(2, "5-1"), EntryCounts(1, 1).encode(), ex=120))
    waiters = Waiters(redis, LAYOUT)  # listener not even started: only markers can answer
    assert await waiters.wait_all([(2, "5-0"), (2, "5-1")], 5.0) == EntryCounts(4, 1)
    assert await waiters.wait_all([(2, "5-0"), (2, "6-0")], 0.05) is None  # 6-0 unfinished
    # an older consumer's marker carries no counts: no made-up answer, the wait times out
    await resolve(redis.set(LAYOUT.committed_key(2, "7-0"), "1", ex=120))
    assert await waiters.wait_all([(2, "7-0")], 0.05) is None


async def test_wait_all_resolves_from_announcements_and_a_late_marker() -> None:
    redis = FakeAsyncRedis()
    waiters = Waiters(redis, LAYOUT)
    waiters.start()
    try:
        waiting = asyncio.create_task(waiters.wait_all([(1, "9-0"), (3, "9-0")], 2.0))
        await asyncio.sleep(0.2)  # registered and subscribed
        message = ",".join(
            [announce_token(1, "9-0", EntryCounts(2)), announce_token(3, "8-0", EntryCounts(7))]
        )
        await resolve(redis.publish(LAYOUT.committed_channel, message))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # partition 3's entry 9-0 is still unfinished
        # finished while the announcement was lost (e.g. the listener was resubscribing):
        # the marker is read again at the deadline
        await resolve(redis.set(LAYOUT.committed_key(3, "9-0"), EntryCounts(0, 0, 0, 4).encode()))
        assert await waiting == EntryCounts(stored=2, dead_lettered=4)
    finally:
        await waiters.stop()


async def test_wait_times_out_with_202(aiohttp_client: ClientFactory) -> None:
    client = await client_for(aiohttp_client, make_settings())
    resp = await client.post(f"{URL}?wait=0.2", data=raw(bundle_body()), headers=AUTH)
    assert resp.status == 202
    assert (await resp.json())["status"] == "accepted"
