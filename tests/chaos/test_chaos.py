"""Chaos under continuous load: kill, restart and starve the pipeline, then audit storage.

Each scenario runs the real ``python -m ingest`` and ``python -m consumer`` against a private
Redis (and, for the database outage, a private PostgreSQL cluster), keeps a load client
posting throughout, breaks one piece, and afterwards checks (chaos_checks): every event that
got a 2xx is stored exactly once, nothing else is stored, the hash chains verify, the stored
graph equals the projection of the stored events; on the client side no 500, no hang, and a
503 always carries ``Retry-After``. The figures of each run are printed in the terminal
summary ("chaos figures").
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.chaos.chaos_checks import assert_client_saw, assert_stored_exactly_once, audit
from tests.chaos.chaos_load import LoadClient
from tests.chaos.chaos_stack import Stack
from tests.chaos.chaos_support import PgCluster, RedisServer
from tests.chaos.conftest import StackFactory
from tests.consumer.process_support import backlog

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

Report = Callable[[dict[str, Any]], None]


async def _finish(stack: Stack, load: LoadClient, report: Report, **extra: Any) -> None:
    """Drain, stop both tiers (exit 0), audit storage and the client's answers."""
    await stack.wait_drained(120)
    codes = await stack.stop()
    result = await audit(stack, load)
    report({**load.summary(), **result.as_dict(), **extra, "exit_codes": codes})
    assert_stored_exactly_once(result, load)
    assert codes == {"ingest": 0, "consumer": 0}, codes


async def test_consumer_sigkilled_five_times(
    make_stack: StackFactory, backend: str, report: Report
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    stack = make_stack(backend)
    await stack.start()
    kills_with_pending = 0
    async with LoadClient(stack.url, uuid.uuid4().hex[:6], workers=3) as load:
        await load.pace(1.0)
        for _ in range(5):
            await load.pace(rng.uniform(0.3, 2.0))
            stack.consumer.signal(signal.SIGKILL)
            await asyncio.to_thread(stack.consumer.wait, 10)
            kills_with_pending += await stack.pending() > 0
            await load.pace(rng.uniform(0.1, 1.0))  # workers keep posting meanwhile
            await stack.start_consumer()
        await load.pace(1.0)
    assert_client_saw(load, allowed=set())
    await _finish(stack, load, report, seed=seed, kills_with_pending=kills_with_pending)


async def test_redis_restarted_under_load(
    make_stack: StackFactory, chaos_redis: RedisServer, report: Report
) -> None:
    stack = make_stack("postgres")
    await stack.start()
    async with LoadClient(stack.url, uuid.uuid4().hex[:6], workers=3) as load:
        await load.pace(2.0)
        down = time.monotonic()
        chaos_redis.crash()  # SIGKILL; appendfsync always keeps every acknowledged XADD
        await load.pace(3.0)
        chaos_redis.start()
        up = time.monotonic()
        await load.pace(3.0)
    during = load.statuses(down + 1.5, up)  # after the 1 s Redis timeout, before restart
    assert during["503"] > 0, f"no 503 while Redis was down: {dict(during)}"
    assert during["202"] + during["200"] == 0, f"2xx without a queue: {dict(during)}"
    assert_client_saw(load, allowed={"503"})
    await _finish(stack, load, report, outage_s=round(up - down, 1), answers_503=during["503"])


async def test_postgres_stopped_for_20_seconds(
    make_stack: StackFactory, own_postgres: PgCluster, report: Report
) -> None:
    stack = make_stack("postgres", dsn=own_postgres.admin_dsn)
    await stack.start()
    async with LoadClient(stack.url, uuid.uuid4().hex[:6], workers=3) as load:
        await load.pace(2.0)
        down = time.monotonic()
        await asyncio.to_thread(own_postgres.stop)
        await load.pace(2.0)
        backlog_during = await _backlog(stack)
        await load.pace(18.0)
        await asyncio.to_thread(own_postgres.start)
        up = time.monotonic()
        await load.pace(2.0)
    during = load.statuses(down, up)
    # The queue absorbs the outage: workers keep getting 202 while the backlog grows.
    assert during["202"] > 0, f"ingest stopped accepting while only the database was down: {during}"
    assert backlog_during > 0
    assert_client_saw(load, allowed={"503"})
    await _finish(stack, load, report, outage_s=round(up - down, 1), accepted_during=during["202"])


async def _backlog(stack: Stack) -> int:
    """Entries not yet committed: undelivered plus delivered-but-unacked."""
    redis = Redis.from_url(stack.redis_url)
    try:
        return await backlog(redis, stack.layout)
    finally:
        await redis.aclose()


async def test_ingest_sigterm_mid_burst(make_stack: StackFactory, report: Report) -> None:
    stack = make_stack("postgres")
    await stack.start()
    async with LoadClient(
        stack.url, uuid.uuid4().hex[:6], workers=3, burst_events=3000, burst_pause_s=0.2
    ) as load:
        await load.pace(1.0)
        deadline = time.monotonic() + 20
        while load.bursts_in_flight == 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # polls the client's counter; no event to wait on
        assert load.bursts_in_flight > 0, "no burst was in flight to interrupt"
        stack.ingest.signal(signal.SIGTERM)
        code = await asyncio.to_thread(stack.ingest.wait, 30)
        assert code == 0, stack.ingest.tail()
        await load.pace(1.0)  # workers find nobody listening
        await stack.start_ingest()
        await load.pace(2.0)
    bursts = [o for o in load.outcomes if o.burst]
    assert any(o.status == "202" for o in bursts)
    # A SIGTERM answers in-flight requests; new connections are refused until the restart.
    assert_client_saw(load, allowed={"503", "refused", "disconnected"})
    await _finish(stack, load, report, sigterm_exit=code, bursts=len(bursts))
