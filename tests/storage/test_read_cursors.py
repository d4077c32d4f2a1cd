"""Cursors that writers cannot move: /v1/events in commit order, stable listing cursors.

The export cursor must hand a client that pages at any moment every stored event exactly
once, also when partitions commit out of insertion order (PostgreSQL: one partition's
transaction held open while another commits). Attempts, tasks and failures page on keys
that never change, so an item updated mid-pagination is neither skipped nor repeated.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from storage.base import EventStore
from storage.envelope import Envelope
from storage.postgres import write as pg_write
from storage.postgres.codecs import init_connection
from storage.postgres.store import PostgresStore
from storage.readside import InvalidCursor, encode_cursor
from storage.views import Page
from tests import factories as f
from tests.storage.conftest import StoreFactory


def env(raw: dict[str, Any], n: int) -> Envelope:
    return f.envelope(raw, entry_id=f"{n}-0", received_at=1_764_320_000.0 + n)


def batch(prefix: str, count: int, n: int) -> list[Envelope]:
    events = [f.event("file.discovered", {"path": f"{prefix}-{i}"}, at=i, event_id=f"{prefix}-{i}")
              for i in range(count)]  # fmt: skip
    return [env(f.body("repo-a", f"b-{prefix}", events), n)]


async def drain(store: EventStore, after: str | None, limit: int) -> tuple[list[str], str | None]:
    """Page until an empty page; the ids seen and the cursor to poll from next."""
    ids: list[str] = []
    while True:
        page = await store.list_events(after=after, limit=limit)
        assert page.position is not None
        if page.next_cursor is not None:
            assert page.next_cursor == page.position
        if not page.items:
            assert after is None or page.position == after
            return ids, page.position
        ids += [e.event_id for e in page.items]
        after = page.position


@pytest.mark.integration
async def test_a_held_partition_is_not_passed_over(postgres_url: str) -> None:
    """Partition 1 inserts A-0..2 and holds its transaction; partition 2 commits B-0..2
    with later gids. A client paging by 2 gets B-0, B-1, B-2, then, once partition 1
    commits, A-0..2: nothing lost, nothing twice."""
    store = PostgresStore(postgres_url, min_size=1, max_size=4)
    await store.open()
    held = await asyncpg.connect(postgres_url)
    await init_connection(held)
    try:
        tx = held.transaction()
        await tx.start()
        await pg_write.write_batch(held, 1, batch("A", 3, 1))
        await store.write_batch(2, batch("B", 3, 2))
        first = await store.list_events(limit=2)
        assert [e.event_id for e in first.items] == ["B-0", "B-1"]
        seen, cursor = await drain(store, first.position, 2)
        assert seen == ["B-2"]
        await tx.commit()
        later, cursor = await drain(store, cursor, 2)
        assert later == ["A-0", "A-1", "A-2"]
        assert (await store.list_events(after=cursor, limit=2)).items == []
    finally:
        await held.close()
        await store.close()


@pytest.mark.integration
async def test_a_cursor_of_the_gid_era_resumes_where_it_stood(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, min_size=1, max_size=2)
    await store.open()
    try:
        await store.write_batch(0, batch("A", 3, 1))
        await store.write_batch(1, batch("B", 3, 2))
        await store.write_batch(0, batch("C", 2, 3))
        every = [e.event_id for e in (await store.list_events(limit=100)).items]
        assert every == ["A-0", "A-1", "A-2", "B-0", "B-1", "B-2", "C-0", "C-1"]
        old = encode_cursor([4])  # what the gid cursor after B-0 looked like
        rest, _ = await drain(store, old, 3)
        assert rest == every[4:]
    finally:
        await store.close()


async def test_the_tail_carries_a_cursor_to_poll_from(store: EventStore) -> None:
    empty = await store.list_events(limit=5)
    assert empty.items == []
    assert empty.next_cursor is None
    assert empty.position is not None
    await store.write_batch(0, batch("A", 3, 1))
    seen, cursor = await drain(store, empty.position, 5)
    assert seen == ["A-0", "A-1", "A-2"]
    await store.write_batch(1, batch("B", 2, 2))
    later, _ = await drain(store, cursor, 5)
    assert later == ["B-0", "B-1"]


@pytest.mark.parametrize("cursor", ["not-base64!", encode_cursor(["x"]), "e30"])
async def test_a_cursor_not_issued_here_is_refused(store: EventStore, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        await store.list_events(after=cursor)
    with pytest.raises(InvalidCursor):
        await store.list_attempts(cursor=cursor)


async def test_an_attempts_cursor_of_the_activity_order_is_refused_clearly(
    store: EventStore,
) -> None:
    with pytest.raises(InvalidCursor, match="earlier version"):
        await store.list_attempts(cursor=encode_cursor(["2026-11-28T09:00:00.000000Z", "a"]))


async def test_listings_neither_skip_nor_repeat_while_items_change(store: EventStore) -> None:
    """Attempts, tasks and failures paged while every listed item gets new events."""
    for i in range(12):
        outcome = "failed" if i % 3 == 0 else "succeeded"
        raw = f.attempt_lifecycle(f"att-{i:02d}", f"task-{i:02d}", start=i, outcome=outcome)
        task = f.event("task.created", {"task_id": f"task-{i:02d}", "target_id": "leviathan-demo"})
        raw["events"].append(task)
        await store.write_batch(i % 4, [env(raw, i)])
    listings: dict[str, Callable[[str | None], Awaitable[Page[Any]]]] = {
        "attempts": lambda c: store.list_attempts(limit=4, cursor=c),
        "tasks": lambda c: store.list_tasks(limit=4, cursor=c),
        "failures": lambda c: store.list_failures(limit=2, cursor=c),
    }
    for name, page_of in listings.items():
        seen: list[str] = []
        cursor: str | None = None
        n = 100
        while True:
            page = await page_of(cursor)
            for item in page.items:
                seen.append(str(getattr(item, "attempt_id", None) or item.task_id))
            # every attempt and task gets a newer event between pages
            n += 1
            bump = [f.event(kind, {"attempt_id": f"att-{k:02d}", "task_id": f"task-{k:02d}"},
                            at=1000 + n)
                    for k in range(12) for kind in ("attempt.started", "task.updated")]  # fmt: skip
            await store.write_batch(n % 4, [env(f.body("leviathan-demo", f"bump-{n}", bump), n)])
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(seen) == len(set(seen)), name
        expected = 4 if name == "failures" else 12
        assert len(seen) == expected, (name, seen)


async def test_pages_during_concurrent_writes_see_every_event_once(
    store_factory: StoreFactory,
) -> None:
    """Two writers (their own store instances, as two consumer processes have) write every
    partition while a reader pages continuously; then the set seen equals the set stored."""
    writers = [store_factory() for _ in range(2)]
    reader = store_factory()
    for s in (*writers, reader):
        await s.open()

    async def write(k: int, s: EventStore) -> None:
        rnd = random.Random(k)
        for n in range(40):
            partition = (k * 4 + n) % 8
            await s.write_batch(partition, batch(f"w{k}-{n}", rnd.randint(1, 25), n))
            await asyncio.sleep(0)

    async def page() -> list[str]:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            # taken before the page: an empty page read after every write ended ends it
            written = all(t.done() for t in tasks)
            p = await reader.list_events(after=cursor, limit=7)
            seen += [e.event_id for e in p.items]
            cursor = p.position
            if not p.items and written:
                return seen
            await asyncio.sleep(0)

    try:
        tasks = [asyncio.create_task(write(k, s)) for k, s in enumerate(writers)]
        seen = await page()
        await asyncio.gather(*tasks)
        stored = [e.event_id async for e in reader.iter_events()]
        assert len(seen) == len(set(seen))
        assert set(seen) == set(stored)
    finally:
        for s in (*writers, reader):
            await s.close()
