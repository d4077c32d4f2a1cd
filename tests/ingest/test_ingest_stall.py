"""A Redis stalled by a busy script under a real ``python -m ingest``: never a 503 for a
bundle that was queued.

Each test runs its own ``redis-server`` (a stall would hold up every other test on the
session's Redis). While a Lua script spins for :data:`STALL_S` seconds, Redis answers
nobody; the pipelines ingest had already written are added once it finishes. Every 202'd
bundle must be in the stream, every 503'd one absent; with a reply wait shorter than the
stall the written ones get 504 ("may or may not be queued"), never 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from storage.queue import resolve
from tests.chaos.chaos_support import RedisServer
from tests.ingest.hostile_support import LAYOUT, IngestProcess, post, small_bundle

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STALL_S = 3.0
BUSY_SCRIPT = """
local t0 = redis.call('TIME')
local start = tonumber(t0[1]) * 1000000 + tonumber(t0[2])
while true do
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000000 + tonumber(t[2]) - start > tonumber(ARGV[1]) then break end
end
return 1
"""


async def _load_through_a_stall(
    proc: IngestProcess, redis_url: str
) -> dict[str, tuple[int, dict[str, object], float]]:
    """Six clients post one-event bundles for a few seconds; Redis stalls meanwhile."""
    results: dict[str, tuple[int, dict[str, object], float]] = {}
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession, worker: int) -> None:
        i = 0
        while not stop.is_set():
            bundle_id = f"stall-w{worker}-{i}"
            results[bundle_id] = await post(session, proc.url, small_bundle(bundle_id))
            i += 1

    busy = Redis.from_url(redis_url)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            clients = [asyncio.create_task(client(session, w)) for w in range(6)]
            await asyncio.sleep(1.0)
            await resolve(busy.eval(BUSY_SCRIPT, 0, str(int(STALL_S * 1_000_000))))
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*clients)
    finally:
        await busy.aclose()
    return results


async def _queued(redis_url: str) -> set[str]:
    redis = Redis.from_url(redis_url)
    try:
        found = set()
        for stream in LAYOUT.streams():
            for _, fields in await resolve(redis.xrange(stream)):
                found.add(orjson.loads(fields[b"bundle"])["bundle_id"])
        return found
    finally:
        await redis.aclose()


def _check_promises(
    results: dict[str, tuple[int, dict[str, object], float]], queued: set[str]
) -> dict[int, int]:
    statuses: dict[int, int] = {}
    for bundle_id, (status, answer, _) in results.items():
        statuses[status] = statuses.get(status, 0) + 1
        assert status in (202, 503, 504), (bundle_id, status, answer)
        if status == 202:
            assert bundle_id in queued, f"{bundle_id} answered 202 but is not in the stream"
        if status == 503:
            assert bundle_id not in queued, f"{bundle_id} answered 503 but was queued: {answer}"
        if status in (503, 504):
            assert answer.get("retry_after") == "1", answer
    return statuses


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.crash()


async def test_a_stalled_redis_is_waited_out(redis_server: RedisServer, tmp_path: Path) -> None:
    proc = IngestProcess(redis_server.url, tmp_path / "ingest", LEVIATHAN_REDIS_TIMEOUT_SECONDS="1")
    await proc.start()
    try:
        results = await _load_through_a_stall(proc, redis_server.url)
    finally:
        proc.stop()
    statuses = _check_promises(results, await _queued(redis_server.url))
    assert 504 not in statuses, statuses  # the stall is shorter than the reply wait
    waited = [took for status, _, took in results.values() if status == 202 and took > 2.0]
    assert waited, "no request was in flight through the stall"


async def test_past_the_reply_wait_the_answer_is_504_never_503(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    proc = IngestProcess(
        redis_server.url,
        tmp_path / "ingest",
        LEVIATHAN_REDIS_TIMEOUT_SECONDS="0.5",
        LEVIATHAN_REDIS_REPLY_WAIT_SECONDS="1",
    )
    await proc.start()
    try:
        results = await _load_through_a_stall(proc, redis_server.url)
    finally:
        proc.stop()
    queued = await _queued(redis_server.url)
    statuses = _check_promises(results, queued)
    unconfirmed = [(b, r) for b, r in results.items() if r[0] == 504]
    assert unconfirmed, statuses
    for _, (_, answer, _) in unconfirmed:
        assert "may or may not be queued" in str(answer["detail"]), answer
    # written before the stall ended: Redis added them once the script finished
    assert any(b in queued for b, _ in unconfirmed)
