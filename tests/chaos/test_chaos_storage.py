"""Chaos in storage under continuous load: an outage, and entries storage refuses.

The consumer's clocks are scaled down through its settings (claim idle 500 ms, at most 2
deliveries, maintenance every second, stall after 3 s) so that a 20 s outage lasts 40 claim
idle times and 20 maintenance runs: long enough for every reclaim, keep-alive and
dead-letter rule to fire if it were going to, and longer than every timeout involved (the
load client's 10 s included). Afterwards the usual audit (chaos_checks): every 2xx'd event
stored exactly once, the chains verify, and the dead streams hold exactly what the scenario
planted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from storage.envelope import encode
from storage.queue import resolve
from storage.schema import Bundle
from tests import factories as f
from tests.chaos.chaos_checks import Report, assert_client_saw, finish
from tests.chaos.chaos_load import LoadClient
from tests.chaos.chaos_stack import Stack, StackFactory
from tests.chaos.chaos_support import PgCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

TIME_SCALED = {
    "LEVIATHAN_CONSUMER_CLAIM_IDLE_MS": "500",
    "LEVIATHAN_CONSUMER_MAX_DELIVERIES": "2",
    "LEVIATHAN_CONSUMER_MAINTENANCE_INTERVAL_S": "1",
    "LEVIATHAN_CONSUMER_STALL_S": "3",
}
OUTAGE_S = 20.0
REFUSED_TYPE = "chaos.refused"


async def test_postgres_stopped_for_40_claim_idle_times(
    make_stack: StackFactory, own_postgres: PgCluster, report: Report
) -> None:
    stack = make_stack("postgres", dsn=own_postgres.admin_dsn, **TIME_SCALED)
    await stack.start()
    async with LoadClient(stack.url, uuid.uuid4().hex[:6], workers=3) as load:
        await load.pace(2.0)
        down = time.monotonic()
        await asyncio.to_thread(own_postgres.stop)
        await load.pace(6.0)  # past the stall time, 12 claim idle times
        backlog_during = await stack.backlog()
        live, _ = await stack.probe_consumer("/healthz")
        ready, ready_body = await stack.probe_consumer("/readyz")
        _, metrics_during = await stack.probe_consumer("/metrics")
        await load.pace(OUTAGE_S - (time.monotonic() - down))
        await asyncio.to_thread(own_postgres.start)
        up = time.monotonic()
        await load.pace(3.0)
    # The queue absorbs the outage: workers keep getting 202 while the backlog grows.
    during = load.statuses(down, up)
    assert during["202"] > 0, f"ingest stopped accepting while only the database was down: {during}"
    assert backlog_during > 0
    # Liveness stays green (no restart loop), readiness and the gauge name the stall.
    assert live == 200
    assert ready == 503
    assert "stalled" in ready_body, ready_body
    assert 'leviathan_consumer_partition_stalled{partition="' in metrics_during
    stalled = [
        line
        for line in metrics_during.splitlines()
        if line.startswith("leviathan_consumer_partition_stalled{") and line.endswith(" 1.0")
    ]
    assert stalled, "no partition reported stalled during the outage"
    assert "leviathan_consumer_storage_available 0.0" in metrics_during
    assert_client_saw(load, allowed={"503"})
    _, metrics_after = await stack.probe_consumer("/metrics")
    assert "leviathan_consumer_storage_available 1.0" in metrics_after
    await finish(
        stack,
        load,
        report,
        outage_s=round(up - down, 1),
        accepted_during=during["202"],
        stalled_partitions=len(stalled),
    )


def _bundle_in(stack: Stack, partition: int, name: str, n: int) -> list[dict[str, Any]]:
    """``n`` attempt bundles whose bundle ids route to ``partition``."""
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < n:
        raw = f.attempt_lifecycle(f"{name}-{i}", f"{name}-task-{i}")
        if stack.layout.partition_of(raw["bundle_id"]) == partition:
            out.append(raw)
        i += 1
    return out


async def _refuse_event_type(dsn: str) -> None:
    """Make storage refuse one event type, as a value out of a column's range would be."""
    con = await asyncpg.connect(dsn)
    try:
        await con.execute(
            "ALTER TABLE events ADD CONSTRAINT chaos_refuses "
            f"CHECK (event_type <> '{REFUSED_TYPE}')"
        )
    finally:
        await con.close()


async def _stored_of(dsn: str, ids: list[str]) -> int:
    con = await asyncpg.connect(dsn)
    try:
        return int(await con.fetchval("SELECT count(*) FROM events WHERE event_id = ANY($1)", ids))
    finally:
        await con.close()


async def test_garbage_and_unstorable_entries_mid_burst(
    make_stack: StackFactory, report: Report
) -> None:
    stack = make_stack("postgres", **TIME_SCALED)
    await stack.start()
    assert stack.postgres_dsn is not None
    await _refuse_event_type(stack.postgres_dsn)
    partition = 1
    stream = stack.layout.stream(partition)
    run = uuid.uuid4().hex[:6]
    [refused] = _bundle_in(stack, partition, f"refused-{run}", 1)
    refused["events"].append(
        f.event(REFUSED_TYPE, {"attempt_id": f"refused-{run}-0"}, event_id=f"{run}-refused")
    )
    healthy = _bundle_in(stack, partition, f"after-{run}", 5)
    healthy_ids = [e["event_id"] for raw in healthy for e in raw["events"]]
    redis = Redis.from_url(stack.redis_url)
    try:
        async with LoadClient(
            stack.url, run, workers=3, burst_events=2000, burst_pause_s=0.2
        ) as load:
            await load.pace(1.0)
            deadline = time.monotonic() + 20
            while load.bursts_in_flight == 0 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)  # polls the client's counter; no event to wait on
            assert load.bursts_in_flight > 0, "no burst was in flight"
            # straight into the stream, as a broken or foreign producer would (ingest
            # validation bypassed): garbage, an entry storage refuses, then healthy entries
            garbage = {b"v": b"1", b"bundle": b"{not json", b"received_at": b"0", b"token": b"x"}
            garbage_id = (await resolve(redis.xadd(stream, garbage))).decode()
            refused_fields = encode(Bundle.model_validate(refused), "chaos")
            refused_id = (await resolve(redis.xadd(stream, refused_fields))).decode()
            added = time.monotonic()
            for raw in healthy:
                await resolve(redis.xadd(stream, encode(Bundle.model_validate(raw), "chaos")))
            # the refused bundle's other events are stored (only the refused one is dead)
            kept = [e["event_id"] for e in refused["events"] if e["event_type"] != REFUSED_TYPE]
            load.sent_ids.update([*healthy_ids, *kept])
            load.accepted_ids.update([*healthy_ids, *kept])  # queued: stored like a 2xx
            while await _stored_of(stack.postgres_dsn, healthy_ids) < len(healthy_ids):
                assert time.monotonic() - added < 15, "the partition stopped flowing"
                await asyncio.sleep(0.1)
            flowing_after_s = time.monotonic() - added
            await load.pace(2.0)
    finally:
        await redis.aclose()
    dead = {fields[b"dead_entry_id"].decode(): fields for _, fields in await stack.dead_entries()}
    assert set(dead) == {garbage_id, refused_id}
    assert dead[garbage_id][b"dead_reason"].startswith(b"undecodable: ")
    reason = dead[refused_id][b"dead_reason"].decode()
    assert reason.startswith("unstorable: "), reason
    assert dead[refused_id][b"dead_event_id"] == f"{run}-refused".encode()  # that event alone
    assert "chaos_refuses" in reason, reason
    assert "\n" not in reason
    assert flowing_after_s < 10, f"healthy entries after the bad ones took {flowing_after_s:.1f}s"
    assert_client_saw(load, allowed={"503"})
    await finish(stack, load, report, dead_letters=2, flowing_after_s=round(flowing_after_s, 2))
