"""Chaos under continuous load: kill and restart the pipeline's processes, then audit storage.

Each scenario runs the real ``python -m ingest`` and ``python -m consumer`` against a private
Redis, keeps a load client posting throughout, breaks one piece, and afterwards checks
(chaos_checks): every event that got a 2xx is stored exactly once, nothing else is stored,
the hash chains verify, the stored graph equals the projection of the stored events; on the
client side no 500, no hang, and a 503 always carries ``Retry-After``. Storage failures (a
database outage, entries storage refuses) are in test_chaos_storage. The figures of each run
are printed in the terminal summary ("chaos figures").
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid

import pytest

from tests.chaos.chaos_checks import Report, assert_client_saw, finish
from tests.chaos.chaos_load import LoadClient, consumer_kills_under_load
from tests.chaos.chaos_stack import StackFactory
from tests.chaos.chaos_support import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


async def test_consumer_sigkilled_five_times(
    make_stack: StackFactory, backend: str, report: Report
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    # bursts of 1,000 events keep the consumer busy for a good part of the time, and each
    # kill is aimed at a moment it holds delivered, unacked entries (a batch in flight).
    # 2 s writer leases: a restarted consumer takes its partitions back only once the dead
    # one's leases expire, and with the default 15 s the later kills met a consumer that
    # was still waiting, holding nothing.
    stack = make_stack(backend, LEVIATHAN_CONSUMER_LEASE_S="2")
    load, kills_with_pending = await consumer_kills_under_load(
        stack, 5, lambda: rng.uniform(0.3, 2.0), lambda: rng.uniform(0.1, 1.0)
    )
    assert_client_saw(load, allowed=set())
    await finish(stack, load, report, seed=seed, kills_with_pending=kills_with_pending)
    # the scenario is about kills that lose a batch in flight: most must have landed so
    assert kills_with_pending >= 3, f"only {kills_with_pending} of 5 kills landed mid-batch"


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
    await finish(stack, load, report, outage_s=round(up - down, 1), answers_503=during["503"])


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
    await finish(stack, load, report, sigterm_exit=code, bursts=len(bursts))
