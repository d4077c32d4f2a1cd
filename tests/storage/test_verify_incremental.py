"""Incremental chain verification (``verify_chain(partition, after=ChainPoint)``), both backends.

A check resumes after a prefix verified earlier: tampering past it is found, the resume
point itself is checked against the remembered hash, and only a full walk re-reads the
prefix (so tampering inside it is the full walk's to find).
"""

from __future__ import annotations

import pytest

from storage.base import EventStore
from storage.chain import ChainPoint
from tests import factories as f
from tests.storage.conftest import StoreFactory
from tests.storage.test_conformance import all_events, env, seed, tamper


async def _extend(store: EventStore, count: int = 3) -> None:
    for i in range(count):
        raw = f.attempt_lifecycle(f"att-more-{i}", "task-more", start=3000 + i)
        await store.write_batch(0, [env(raw, 100 + i)])


async def _point(store: EventStore) -> ChainPoint:
    status = await store.verify_chain(0)
    assert status.ok
    return ChainPoint(status.checked, status.last_hash)


async def test_resumed_check_covers_new_events_and_counts_the_prefix(store: EventStore) -> None:
    await seed(store)
    prefix = await _point(store)
    assert prefix.seq > 0
    await _extend(store)
    events = await all_events(store, 0)
    status = await store.verify_chain(0, after=prefix)
    assert status.ok
    assert status.checked == len(events)
    assert status.last_hash == events[-1].hash
    # nothing new: the same point comes back
    again = await store.verify_chain(0, after=ChainPoint(status.checked, status.last_hash))
    assert (again.ok, again.checked, again.last_hash) == (True, len(events), events[-1].hash)


async def test_tampering_after_the_prefix_is_found(
    store: EventStore, store_factory: StoreFactory, request: pytest.FixtureRequest
) -> None:
    await seed(store)
    prefix = await _point(store)
    await _extend(store)
    events = await all_events(store, 0)
    victim = events[-2]
    assert victim.seq > prefix.seq
    await tamper(request, store_factory, victim)
    status = await store.verify_chain(0, after=prefix)
    assert not status.ok
    assert status.broken_event_id == victim.event_id
    assert status.broken_at_seq == victim.seq
    assert status.checked == victim.seq - 1


async def test_full_walk_finds_tampering_inside_the_prefix(
    store: EventStore, store_factory: StoreFactory, request: pytest.FixtureRequest
) -> None:
    await seed(store)
    await _extend(store)
    prefix = await _point(store)
    victim = (await all_events(store, 0))[2]
    await tamper(request, store_factory, victim)
    resumed = await store.verify_chain(0, after=prefix)
    if request.node.callspec.params["store_factory"] == "postgres":
        # the prefix is not re-read: an edit inside it is invisible to a resumed check
        assert resumed.ok
        assert resumed.checked == prefix.seq
    full = await store.verify_chain(0)
    assert not full.ok
    assert full.broken_event_id == victim.event_id
    assert full.broken_at_seq == victim.seq


async def test_a_resume_point_the_log_no_longer_matches_is_broken(store: EventStore) -> None:
    await seed(store)
    prefix = await _point(store)
    forged = await store.verify_chain(0, after=ChainPoint(prefix.seq, "f" * 64))
    assert not forged.ok
    assert forged.broken_at_seq == prefix.seq
    assert forged.reason is not None
    assert "no longer has the hash" in forged.reason
    beyond = await store.verify_chain(0, after=ChainPoint(prefix.seq + 5, prefix.hash))
    assert not beyond.ok
    assert beyond.reason is not None
    assert "no longer stored" in beyond.reason
