"""POST /v1/attempts/{id}/invalidate and GET /v1/stats against real Redis."""

from __future__ import annotations

import orjson
import pytest
import redis.asyncio as aioredis
from pytest_aiohttp import AiohttpClient

from storage.envelope import decode
from storage.queue import GROUP, resolve
from tests.query.query_support import AUTH, LAYOUT, AppFactory

pytestmark = pytest.mark.integration


async def test_invalidate_queues_event_in_attempt_partition(
    make_app: AppFactory, aiohttp_client: AiohttpClient, redis: aioredis.Redis
) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    resp = await client.post("/v1/attempts/att-2/invalidate", json={"reason": "flaky runner"})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "accepted"
    assert body["bundle_id"] == "bundle-att-2"
    key = LAYOUT.stream(LAYOUT.partition_of("bundle-att-2"))
    entries = await resolve(redis.xrange(key))
    assert len(entries) == 1
    entry_id, fields = entries[0]
    env = decode(entry_id.decode(), fields)
    assert env.bundle.bundle_id == "bundle-att-2"
    assert env.bundle.target == "leviathan-demo"
    [event] = env.bundle.events
    assert event.event_type == "attempt.invalidated"
    assert event.event_id == body["event_id"]
    assert event.payload == {
        "attempt_id": "att-2",
        "reason": "flaky runner",
        "task_id": "task-tests-2",
    }
    other = [LAYOUT.stream(p) for p in range(LAYOUT.partitions) if LAYOUT.stream(p) != key]
    assert [await resolve(redis.xlen(k)) for k in other] == [0] * len(other)


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"{}", 422),
        (b'{"reason": "   "}', 422),
        (b'{"reason": 3}', 422),
        (b"not json", 400),
        (b"", 422),
    ],
)
async def test_invalidate_rejects_bad_bodies_and_queues_nothing(
    make_app: AppFactory,
    aiohttp_client: AiohttpClient,
    redis: aioredis.Redis,
    payload: bytes,
    status: int,
) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    resp = await client.post(
        "/v1/attempts/att-1/invalidate",
        data=payload,
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == status
    assert (await resp.json())["detail"]
    assert [await resolve(redis.xlen(k)) for k in LAYOUT.streams()] == [0] * LAYOUT.partitions


async def test_invalidate_unknown_attempt_is_404(
    make_app: AppFactory, aiohttp_client: AiohttpClient, redis: aioredis.Redis
) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    resp = await client.post("/v1/attempts/att-404/invalidate", json={"reason": "x"})
    assert resp.status == 404
    assert "att-404" in (await resp.json())["detail"]
    assert [await resolve(redis.xlen(k)) for k in LAYOUT.streams()] == [0] * LAYOUT.partitions


async def test_invalidate_checks_the_body_before_the_attempt(
    make_app: AppFactory, aiohttp_client: AiohttpClient, redis: aioredis.Redis
) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    resp = await client.post("/v1/attempts/att-404/invalidate", json={})
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["body", "reason"]
    assert [await resolve(redis.xlen(k)) for k in LAYOUT.streams()] == [0] * LAYOUT.partitions


async def test_stats_per_partition(
    make_app: AppFactory, aiohttp_client: AiohttpClient, redis: aioredis.Redis
) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    empty = await (await client.get("/v1/stats")).json()
    assert [p["length"] for p in empty["partitions"]] == [0] * LAYOUT.partitions
    assert empty["dead_letters"] == 0

    busy = LAYOUT.stream(1)
    for n in range(3):
        await resolve(redis.xadd(busy, {b"n": str(n).encode()}))
    await resolve(redis.xgroup_create(busy, GROUP, id="0"))
    await resolve(redis.xreadgroup(GROUP, "writer-a", {busy: ">"}, count=2))
    await resolve(redis.xadd(LAYOUT.dead_stream(1), {b"dead_reason": b"unstorable: test"}))
    await resolve(redis.xadd(LAYOUT.dead_stream(3), {b"dead_reason": b"undecodable: test"}))
    # an entry left in the single dead stream of earlier releases still counts
    await resolve(redis.xadd(LAYOUT.legacy_dead, {b"reason": orjson.dumps("poison")}))

    stats = await (await client.get("/v1/stats")).json()
    part = stats["partitions"][1]
    assert part == {
        "partition": 1,
        "stream": busy,
        "length": 3,
        "lag": 1,
        "pending": 2,
        "consumers": [
            {"name": "writer-a", "pending": 2, "idle_ms": part["consumers"][0]["idle_ms"]}
        ],
    }
    assert stats["total_length"] == 3
    assert stats["total_pending"] == 2
    assert stats["dead_letters"] == 3


async def test_stats_reports_a_refusal_with_its_text(
    make_app: AppFactory, aiohttp_client: AiohttpClient, redis: aioredis.Redis
) -> None:
    """A key of the wrong type is a fault to report, not a stream that is missing."""
    await resolve(redis.set(LAYOUT.stream(2), b"not a stream"))
    client = await aiohttp_client(make_app(), headers=AUTH)
    resp = await client.get("/v1/stats")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert "WRONGTYPE" in await resp.text()


async def test_stats_lag_is_the_checked_one_not_redis_phantom_counter(
    make_app: AppFactory, aiohttp_client: AiohttpClient, redis: aioredis.Redis
) -> None:
    """After an AOF repair Redis can report a lag over a stream whose group read it all."""
    client = await aiohttp_client(make_app(), headers=AUTH)
    stream = LAYOUT.stream(2)
    ids = [await resolve(redis.xadd(stream, {b"n": str(n).encode()})) for n in range(3)]
    await resolve(redis.xgroup_create(stream, GROUP, id="0"))
    await resolve(redis.xreadgroup(GROUP, "writer-a", {stream: ">"}, count=3))
    await resolve(redis.xack(stream, GROUP, *ids))
    await resolve(redis.xtrim(stream, maxlen=0, approximate=False))
    last = ids[-1].decode()
    await resolve(
        redis.execute_command(  # type: ignore[no-untyped-call]
            "XSETID", stream, last, "ENTRIESADDED", 50, "MAXDELETEDID", last
        )
    )
    rows = await resolve(redis.xinfo_groups(stream))
    assert int(rows[0]["lag"]) > 0  # Redis' counter is wrong here
    stats = await (await client.get("/v1/stats")).json()
    assert stats["partitions"][2]["lag"] == 0
    assert stats["total_lag"] == 0
