"""The in-flight memory budget: wait for room (bounded), then 503 with Retry-After."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from fakeredis import FakeAsyncRedis

from ingest.app import RUNTIME_KEY
from ingest.budget import Budget
from tests.factories import body, event
from tests.ingest.ingest_support import (
    AUTH,
    TOKEN,
    ClientFactory,
    bundle_body,
    client_for,
    make_settings,
    raw,
    stream_entries,
)
from webcore.errors import Unavailable

URL = "/v1/events/ingest"


async def test_a_request_that_does_not_fit_waits_then_gets_503() -> None:
    budget = Budget(100, wait=0.3, retry_after=3)
    async with budget.reserve(80):
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            async with budget.reserve(50):
                pytest.fail("granted beyond the budget")
        assert 0.3 <= time.monotonic() - started < 2
        assert caught.value.status == 503
        assert caught.value.headers == {"Retry-After": "3"}
        assert "in-flight memory budget" in caught.value.detail
        assert budget.used == 80
    assert budget.used == 0


async def test_a_waiting_request_gets_in_once_room_is_freed() -> None:
    budget = Budget(100, wait=5, retry_after=1)
    first = budget.reserve(80)
    await first.__aenter__()
    waiter = asyncio.create_task(budget.acquire(50))
    behind = asyncio.create_task(budget.acquire(10))  # fits, but waits its turn (FIFO)
    await asyncio.sleep(0.05)
    assert not waiter.done()
    assert not behind.done()
    first.release()
    assert await waiter == 50
    assert await behind == 10
    assert budget.used == 60


async def test_a_reservation_larger_than_the_budget_runs_alone() -> None:
    budget = Budget(100, wait=0.2, retry_after=1)
    async with budget.reserve(10_000) as grant:
        assert grant.held == 100
        with pytest.raises(Unavailable):
            await budget.acquire(1)
    assert budget.used == 0


async def test_a_cancelled_waiter_holds_nothing() -> None:
    budget = Budget(100, wait=5, retry_after=1)
    await budget.acquire(100)
    waiter = asyncio.create_task(budget.acquire(30))
    await asyncio.sleep(0.02)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.release(100)
    assert budget.used == 0
    assert await budget.acquire(100) == 100


async def test_grow_waits_for_the_difference_only() -> None:
    budget = Budget(100, wait=0.2, retry_after=1)
    async with budget.reserve(30) as grant:
        await grant.grow(60)
        assert (grant.held, budget.used) == (60, 60)
        await grant.grow(10)  # never shrinks
        assert grant.held == 60
    assert budget.used == 0


async def test_try_grow_takes_only_what_fits_without_a_wait() -> None:
    budget = Budget(100, wait=0.2, retry_after=1)
    grant = budget.reserve()
    assert grant.try_grow(60)
    assert (grant.held, budget.used) == (60, 60)
    assert grant.try_grow(10)  # never shrinks
    assert grant.try_grow(1000)  # clamped to the budget: the 40 left
    assert (grant.held, budget.used) == (100, 100)
    grant.release()
    other = budget.reserve()
    assert other.try_grow(70)
    assert not grant.try_grow(50)  # does not fit: nothing taken
    assert (grant.held, budget.used) == (0, 70)
    waiting = asyncio.create_task(grant.grow(50))
    await asyncio.sleep(0)
    third = budget.reserve()
    assert not third.try_grow(1)  # fits, but someone waits first
    assert (third.held, budget.used) == (0, 70)
    other.release()
    await waiting
    assert (grant.held, budget.used) == (50, 50)
    grant.release()
    assert budget.used == 0


async def test_a_slow_upload_holds_what_it_sent_and_a_full_budget_means_503(
    aiohttp_client: ClientFactory,
) -> None:
    """A declared length reserves nothing: a slow upload holds twice the bytes it sent, so
    a bundle beside it is queued; a budget held in full makes the next request wait, then
    answers 503."""
    redis = FakeAsyncRedis()
    settings = make_settings(max_inflight_bytes=1024 * 1024, inflight_wait_seconds=0.3)
    client = await client_for(aiohttp_client, settings, redis)
    rt = client.app[RUNTIME_KEY]
    events = [event("attempt.progress", {"i": i, "pad": "x" * 200}) for i in range(800)]
    data = raw(body("repo-a", "bundle-slow", events))  # over the whole budget once parsed
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = (
        f"POST {URL} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    writer.write(head.encode() + data[:1000])
    await writer.drain()
    await asyncio.sleep(0.2)  # read as a chunk of its own: the next one is charged
    writer.write(data[1000:2000])
    await writer.drain()
    for _ in range(200):
        if rt.budget.used:
            break
        await asyncio.sleep(0.01)
    assert rt.budget.used == 2 * 2000  # the bytes sent so far, not the declared length

    resp = await client.post(URL, data=raw(bundle_body("bundle-beside")), headers=AUTH)
    assert resp.status == 202

    async with rt.budget.reserve(rt.budget.total - rt.budget.used):  # the rest of it
        started = time.monotonic()
        resp = await client.post(URL, data=raw(bundle_body("bundle-fast")), headers=AUTH)
        assert resp.status == 503
        assert time.monotonic() - started >= 0.3
        assert resp.headers["Retry-After"] == "1"
        assert "in-flight memory budget" in (await resp.json())["detail"]

    writer.write(data[2000:])
    await writer.drain()
    status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line  # its parse would not fit
    writer.close()
    await writer.wait_closed()
    assert rt.budget.used == 0
    resp = await client.post(URL, data=raw(bundle_body("bundle-fast")), headers=AUTH)
    assert resp.status == 202
    queued = {orjson.loads(f[b"bundle"])["bundle_id"] for _, (_, f) in await stream_entries(redis)}
    assert queued == {"bundle-beside", "bundle-fast"}


async def test_waiters_holding_bytes_do_not_block_each_other_for_the_whole_wait() -> None:
    """Two requests each hold part of the budget and wait for more than is left: the
    newest gives up at once (503) and releases, so the oldest goes on — instead of both
    waiting out ``wait`` (here far longer than the test allows) and both failing."""
    budget = Budget(100, wait=60, retry_after=1)
    first, second = budget.reserve(40), budget.reserve(40)
    await first.__aenter__()
    await second.__aenter__()
    assert budget.used == 80
    grow_first = asyncio.create_task(first.grow(80))
    await asyncio.sleep(0)
    grow_second = asyncio.create_task(second.grow(80))
    with pytest.raises(Unavailable):
        await asyncio.wait_for(grow_second, 10)
    assert second.held == 40  # what it held is given back when its request ends
    second.release()
    await asyncio.wait_for(grow_first, 10)
    assert (first.held, budget.used) == (80, 80)
    first.release()
    assert budget.used == 0


async def test_a_waiter_is_not_made_to_yield_when_others_will_give_back() -> None:
    """Bytes held by a request that is not waiting (parsing, publishing) will come back:
    the waiters wait for them instead of failing."""
    budget = Budget(100, wait=60, retry_after=1)
    busy = budget.reserve(70)
    await busy.__aenter__()
    small = budget.reserve(10)
    await small.__aenter__()
    waiting = asyncio.create_task(small.grow(40))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    busy.release()
    await asyncio.wait_for(waiting, 10)
    assert small.held == 40
    small.release()
