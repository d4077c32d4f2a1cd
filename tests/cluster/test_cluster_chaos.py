"""Chaos on a real Redis Cluster under continuous load: consumer kills, a slot moved by hand,
a master killed so its replica takes over. Afterwards (tests.chaos.chaos_checks) every event
answered 2xx is stored exactly once, nothing else is, the chains verify and the graph equals
the projection; the client saw no 500 and no hang, and every 503 carried ``Retry-After``."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.crc import key_slot

from tests.chaos.chaos_checks import Report, assert_client_saw, finish
from tests.chaos.chaos_load import LoadClient, consumer_kills_under_load
from tests.chaos.chaos_stack import StackFactory
from tests.cluster_support import RedisClusterServers

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


async def test_consumer_sigkilled_on_a_cluster(cluster_stack: StackFactory, report: Report) -> None:
    # A restarted consumer takes its partitions back only once its old writer leases expire
    # (plus one TTL for the member list): with the default 15 s, the kills after the first
    # all met a consumer still waiting for its leases, holding nothing. 2 s lets each one
    # land mid-batch, which is what this test is about.
    stack = cluster_stack(LEVIATHAN_CONSUMER_LEASE_S="2")
    load, kills_with_pending = await consumer_kills_under_load(stack, 3, lambda: 0.5, lambda: 0.3)
    assert_client_saw(load, allowed=set())
    await finish(stack, load, report, kills_with_pending=kills_with_pending)
    assert kills_with_pending >= 1, "no kill landed while the consumer held a batch"


async def test_slots_moved_under_load(
    cluster_stack: StackFactory, redis_cluster: RedisClusterServers, report: Report
) -> None:
    """Partitions' slots move to other masters while ingest and the consumer run: requests
    follow MOVED/ASK, nothing is refused for long, nothing accepted is lost."""
    stack = cluster_stack()
    await stack.start()
    moved = 0
    async with LoadClient(stack.url, uuid.uuid4().hex[:6], workers=3) as load:
        await load.pace(1.5)
        for partition in range(stack.layout.partitions):
            slot = key_slot(stack.layout.stream(partition).encode())
            owner = redis_cluster.node_of_slot(slot)
            target = next(n for n in redis_cluster.masters() if n is not owner)
            await asyncio.to_thread(redis_cluster.move_slot, slot, target)
            moved += 1
            await load.pace(0.5)
        await load.pace(1.5)
    assert_client_saw(load, allowed={"503"})
    await finish(stack, load, report, slots_moved=moved, answers_503=load.statuses()["503"])


async def test_master_killed_under_load_replica_takes_over(
    cluster_stack: StackFactory, redis_cluster: RedisClusterServers, report: Report
) -> None:
    """With LEVIATHAN_REDIS_MIN_REPLICA_ACKS=1 an entry is answered 2xx only once a replica
    holds it, so the replica promoted after the master's SIGKILL has every accepted entry.
    The promoted master has no replica of its own until the old one rejoins: its partitions
    answer 503 (durability before availability) until then, and 2xx again afterwards."""
    stack = cluster_stack(LEVIATHAN_REDIS_MIN_REPLICA_ACKS="1")
    await stack.start()
    slot = key_slot(stack.layout.stream(0).encode())
    victim = redis_cluster.node_of_slot(slot)
    async with LoadClient(stack.url, uuid.uuid4().hex[:6], workers=3) as load:
        await load.pace(2.0)
        down = time.monotonic()
        victim.crash()
        await asyncio.to_thread(redis_cluster.wait_ok, 30, False)  # the replica took over
        promoted = time.monotonic()
        await load.pace(1.0)
        victim.start()  # rejoins as the replica of its old replica
        await asyncio.to_thread(redis_cluster.wait_ok, 30)
        up = time.monotonic()
        await load.pace(3.0)
    assert redis_cluster.node_of_slot(slot) is not victim
    assert_client_saw(load, allowed={"503"})
    after = load.statuses(up + 1.0)
    assert after["202"] + after["200"] > 0, f"no 2xx once replicated again: {dict(after)}"
    await finish(
        stack,
        load,
        report,
        failover_s=round(promoted - down, 1),
        replica_back_s=round(up - down, 1),
        answers_503=load.statuses()["503"],
    )
