"""Conformance suite: what every EventStore backend must do (storage.base).

Runs against each backend through the ``store``/``store_factory`` fixtures; only the
Protocol is used, except for the small per-backend tamper hooks at the bottom.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from pathlib import Path
from typing import Any

import pytest

from storage.base import EntryOutcome, EventStore, StoredEvent
from storage.chain import GENESIS_HASH
from storage.projection import Graph, project
from storage.readside import InvalidCursor
from tests import factories as f
from tests.storage.conftest import StoreFactory


def env(raw: dict[str, Any], n: int = 0) -> Any:
    return f.envelope(raw, entry_id=f"{n}-0", received_at=1_764_320_000.0 + n)


def seed_bodies() -> list[dict[str, Any]]:
    return [
        f.tasks_with_dependencies(),
        f.attempt_lifecycle("att-ok", "task-docs-1", start=10),
        f.attempt_lifecycle("att-bad", "task-tests-2", outcome="failed", start=400),
        f.attempt_lifecycle("att-other", "task-x", target="other", pr_number=None, start=800),
        f.bootstrap_burst(30),
    ]


async def seed(store: EventStore) -> int:
    total = 0
    for n, raw in enumerate(seed_bodies()):
        result = await store.write_batch(n % 2, [env(raw, n)])
        total += result.written
    return total


async def all_events(store: EventStore, partition: int | None = None) -> list[StoredEvent]:
    return [ev async for ev in store.iter_events(partition)]


async def test_dedup_identical_duplicate_counted(store: EventStore) -> None:
    raw = f.attempt_lifecycle("att-d", "task-d")
    first = await store.write_batch(0, [env(raw)])
    again = await store.write_batch(0, [env(raw, 1)])
    assert (first.written, first.duplicates) == (len(raw["events"]), 0)
    assert (again.written, again.duplicates, again.revisions) == (0, len(raw["events"]), 0)
    assert again.outcomes == {"1-0": EntryOutcome(0, 0, len(raw["events"]))}
    assert first.outcomes == {"0-0": EntryOutcome(len(raw["events"]), 0, 0)}
    assert await store.count_events() == len(raw["events"])


async def test_dedup_is_global_across_partitions(store: EventStore) -> None:
    raw = f.attempt_lifecycle("att-g", "task-g")
    await store.write_batch(0, [env(raw)])
    again = await store.write_batch(3, [env(raw, 1)])
    assert again.written == 0
    assert again.duplicates == len(raw["events"])
    assert await store.partitions() == [0]


async def test_reused_id_with_new_content_is_a_revision(store: EventStore) -> None:
    original = f.body("t", "b1", [f.event("task.created", {"task_id": "k"}, event_id="same")])
    changed = copy.deepcopy(original)
    changed["bundle_id"] = "b2"
    changed["events"][0]["payload"]["title"] = "different"
    await store.write_batch(0, [env(original)])
    result = await store.write_batch(0, [env(changed, 7)])
    assert (result.written, result.revisions, result.duplicates) == (1, 1, 0)
    assert result.outcomes == {"7-0": EntryOutcome(stored=0, revisions=1, duplicates=0)}
    first, second = await all_events(store)
    assert (first.event_id, first.revision, "title" in first.payload) == ("same", 1, False)
    assert (second.event_id, second.revision, second.payload["title"]) == ("same", 2, "different")
    assert second.prev_hash == first.hash
    assert [e.revision for e in (await store.list_events()).items] == [1, 2]
    assert (await store.verify_chain(0)).ok
    # the same content again, as either revision, is a duplicate; the graph folds both
    again = await store.write_batch(3, [env(original, 8), env(changed, 9)])
    assert (again.written, again.duplicates) == (0, 2)
    assert (await store.graph()).node("Task", "k") == project(Graph(), [first, second]).node(
        "Task", "k"
    )
    assert ((await store.graph()).node("Task", "k") or {})["title"] == "different"


async def test_same_batch_duplicates_and_revisions(store: EventStore) -> None:
    ev = f.event("task.created", {"task_id": "k"}, event_id="dup")
    other = copy.deepcopy(ev)
    other["payload"]["x"] = 1
    raw = f.body("t", "b", [ev, ev])
    raw2 = f.body("t", "b2", [other, other])
    empty = f.body("t", "b3", [])
    result = await store.write_batch(0, [env(raw), env(raw, 1), env(raw2, 2), env(empty, 3)])
    assert (result.written, result.revisions, result.duplicates) == (2, 1, 4)
    assert result.outcomes == {
        "0-0": EntryOutcome(1, 0, 1),
        "1-0": EntryOutcome(0, 0, 2),
        "2-0": EntryOutcome(0, 1, 1),
        "3-0": EntryOutcome(0, 0, 0),
    }
    assert [(e.event_id, e.revision) for e in await all_events(store)] == [
        ("dup", 1),
        ("dup", 2),
    ]


async def test_revision_numbers_continue_after_restart(
    store: EventStore, store_factory: StoreFactory
) -> None:
    bodies = [f.body("t", f"b{n}", [f.event("x.y", {"n": n}, event_id="again")]) for n in range(3)]
    await store.write_batch(0, [env(bodies[0])])
    await store.close()
    reopened = store_factory()
    await reopened.open()
    try:
        result = await reopened.write_batch(1, [env(bodies[1], 1), env(bodies[2], 2)])
        assert (result.written, result.revisions) == (2, 2)
        assert [e.revision for e in await all_events(reopened)] == [1, 2, 3]
        assert (await reopened.write_batch(2, [env(bodies[1], 3)])).duplicates == 1
    finally:
        await reopened.close()


async def test_chain_links_and_verifies(store: EventStore) -> None:
    await seed(store)
    for partition in await store.partitions():
        events = await all_events(store, partition)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[0].prev_hash == GENESIS_HASH
        for prev, ev in itertools.pairwise(events):
            assert ev.prev_hash == prev.hash
        status = await store.verify_chain(partition)
        assert status.ok
        assert status.checked == len(events)
        assert status.last_hash == events[-1].hash


async def test_tampered_event_detected_and_named(
    store: EventStore, store_factory: StoreFactory, request: pytest.FixtureRequest
) -> None:
    await seed(store)
    events = await all_events(store, 0)
    victim = events[len(events) // 2]
    await tamper(request, store_factory, victim)
    status = await store.verify_chain(0)
    assert not status.ok
    assert status.broken_event_id == victim.event_id
    assert status.broken_at_seq == victim.seq
    assert status.checked == victim.seq - 1


async def test_stored_graph_equals_projection_and_rebuild(store: EventStore) -> None:
    await seed(store)
    stored = await store.graph()
    assert stored == project(Graph(), await all_events(store))
    assert await store.rebuild_graph() == await store.count_events()
    assert await store.graph() == stored


async def test_restart_keeps_state_and_continues_chain(
    store: EventStore, store_factory: StoreFactory
) -> None:
    await seed(store)
    before = (await store.graph(), await all_events(store), await store.partitions())
    await store.close()
    reopened = store_factory()
    await reopened.open()
    try:
        after = (await reopened.graph(), await all_events(reopened), await reopened.partitions())
        assert after == before
        raw = f.attempt_lifecycle("att-new", "task-docs-1", start=2000)
        assert (await reopened.write_batch(0, [env(raw, 9)])).written == len(raw["events"])
        assert (await reopened.verify_chain(0)).ok
    finally:
        await reopened.close()


async def test_concurrent_writers_one_partition(
    store: EventStore, store_factory: StoreFactory
) -> None:
    second = store_factory()
    await second.open()
    try:
        bodies = [f.attempt_lifecycle(f"att-c{i}", f"task-c{i}") for i in range(12)]

        async def writer(target: EventStore, mine: list[dict[str, Any]]) -> None:
            for n, raw in enumerate(mine):
                await target.write_batch(0, [env(raw, n)])

        await asyncio.gather(writer(store, bodies[::2]), writer(second, bodies[1::2]))
        events = await all_events(second, 0)
        expected = sorted(e["event_id"] for raw in bodies for e in raw["events"])
        assert sorted(e.event_id for e in events) == expected
        assert (await store.verify_chain(0)).ok
    finally:
        await second.close()


async def test_attempt_reads(store: EventStore) -> None:
    await seed(store)
    ok = await store.get_attempt("att-ok")
    assert ok is not None
    assert ok.attempt_node.properties["status"] == "succeeded"
    assert [e.event_id for e in ok.events] == [f"att-ok-0{i}" for i in range(1, 6)]
    # the artifact.created event and the bundle artifact of the same sha256: one node
    [artifact] = ok.artifacts
    assert artifact.node_type == "Artifact"
    assert artifact.properties["kind"] == "log"
    assert artifact.properties["uri"].startswith("file:///artifacts/")
    assert await store.get_attempt("nope") is None
    assert await store.attempt_exists("att-bad")
    assert not await store.attempt_exists("nope")
    other = await store.list_attempts(target="other")
    assert [a.attempt_id for a in other.items] == ["att-other"]
    failed = await store.list_attempts(status="failed")
    assert [a.attempt_id for a in failed.items] == ["att-bad"]


async def test_attempt_paging_is_complete(store: EventStore) -> None:
    for i in range(7):
        await store.write_batch(0, [env(f.attempt_lifecycle(f"att-p{i}", "t", start=i % 3), i)])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.list_attempts(limit=3, cursor=cursor)
        seen += [a.attempt_id for a in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == [f"att-p{i}" for i in range(7)]
    assert len(seen) == 7
    assert seen == [f"att-p{i}" for i in reversed(range(7))]  # newest first, as stored


async def test_failures(store: EventStore) -> None:
    await seed(store)
    failures = (await store.list_failures()).items
    assert [x.attempt_id for x in failures] == ["att-bad"]
    (failure,) = failures
    assert failure.error == "pytest exited with 1: 3 failed"
    assert failure.task_id == "task-tests-2"  # from the graph: the event lacks it
    assert failure.target == "leviathan-demo"
    assert (await store.list_failures(target="other")).items == []


async def test_tasks_with_dependencies(store: EventStore) -> None:
    await seed(store)
    tasks = {t.task_id: t for t in (await store.list_tasks(target="leviathan-demo")).items}
    assert tasks["task-tests-2"].depends_on == ["task-docs-1"]
    assert tasks["task-docs-1"].dependents == ["task-backlog-3", "task-tests-2"]
    assert tasks["task-docs-1"].status == "completed"
    assert tasks["task-docs-1"].latest_attempt_status == "succeeded"
    assert tasks["task-tests-2"].latest_attempt_status == "failed"
    detail = await store.get_task("task-docs-1")
    assert detail is not None
    assert [a.attempt_id for a in detail.attempts] == ["att-ok"]
    assert await store.get_task("nope") is None
    completed = (await store.list_tasks(status="completed")).items
    assert [t.task_id for t in completed] == ["task-docs-1"]


async def test_task_list_agrees_with_each_task(store: EventStore) -> None:
    """A task list reads only two properties of each attempt; it must say what the task's
    own page says, with several attempts per task and ties on the time."""
    bodies = [
        f.attempt_lifecycle("att-old", "task-multi", start=10),
        f.attempt_lifecycle("att-new", "task-multi", outcome="failed", start=500),
        f.attempt_lifecycle("att-tie-a", "task-tie", outcome="failed", start=900),
        f.attempt_lifecycle("att-tie-b", "task-tie", start=900),
        # last seen in the same second, one on the whole second (shown without microseconds)
        f.attempt_lifecycle("att-frac-a", "task-frac", outcome="failed", start=1037.25),
        f.attempt_lifecycle("att-frac-b", "task-frac", start=1000),
        f.tasks_with_dependencies(),
    ]
    for task in ("task-multi", "task-tie", "task-frac"):
        bodies.append(
            f.body(
                "leviathan-demo",
                f"b-{task}",
                [f.event("task.created", {"task_id": task, "target_id": "leviathan-demo"})],
            )
        )
    for n, raw in enumerate(bodies):
        await store.write_batch(n % 2, [env(raw, n)])
    listed = (await store.list_tasks(limit=100)).items
    assert {t.task_id for t in listed} >= {"task-multi", "task-tie", "task-frac", "task-docs-1"}
    for summary in listed:
        detail = await store.get_task(summary.task_id)
        assert detail is not None
        assert summary == detail.task, summary.task_id
        newest = detail.attempts[0].status if detail.attempts else None
        assert summary.latest_attempt_status == newest
    by_id = {t.task_id: t for t in listed}
    assert by_id["task-multi"].latest_attempt_status == "failed"
    assert by_id["task-tie"].latest_attempt_status == "succeeded"  # same time: by attempt id


async def test_event_paging_and_recent(store: EventStore) -> None:
    total = await seed(store)
    ids: list[str] = []
    after: str | None = None
    while True:
        page = await store.list_events(after=after, limit=7)
        ids += [e.event_id for e in page.items]
        assert page.position is not None  # also on the last page: where to poll from
        after = page.next_cursor
        if after is None:
            tail = await store.list_events(after=page.position, limit=7)
            assert tail.items == []
            assert tail.position == page.position  # a caught-up client keeps its place
            break
    assert len(ids) == len(set(ids)) == total
    assert ids == [e.event_id for e in await all_events(store)]
    recent = await store.recent_events(limit=5)
    assert [e.event_id for e in recent] == ids[::-1][:5]
    summary = await store.graph_summary()
    assert [e.event_id for e in summary.recent_events] == ids[::-1][:20]
    assert summary.nodes_by_type["Attempt"] == 3
    only = await store.list_events(attempt_id="att-bad")
    assert [e.event_type for e in only.items][-1] == "attempt.failed"
    assert all(e.event_type == "file.discovered" for e in
               (await store.list_events(event_type="file.discovered")).items)  # fmt: skip


@pytest.mark.parametrize("bad", ["!!!", "bm90IGpzb24", "WzEsMiwzXQ", "WyJ4Il0"])
async def test_invalid_cursor_rejected(store: EventStore, bad: str) -> None:
    await seed(store)
    with pytest.raises(InvalidCursor):
        await store.list_events(after=bad)
    with pytest.raises(InvalidCursor):
        await store.list_attempts(cursor=bad)


# -- backend-specific tamper hooks -------------------------------------------------------
async def tamper(
    request: pytest.FixtureRequest, factory: StoreFactory, victim: StoredEvent
) -> None:
    backend = request.node.callspec.params["store_factory"]
    if backend == "ndjson":
        tamper_ndjson(request.getfixturevalue("tmp_path") / "log", victim)
    else:
        await tamper_postgres(request, victim)


def tamper_ndjson(directory: Path, victim: StoredEvent) -> None:
    path = directory / f"events-{victim.partition:04d}.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    edited = lines[victim.seq - 1].replace(b'"payload":{', b'"payload":{"forged":true,', 1)
    assert edited != lines[victim.seq - 1]
    lines[victim.seq - 1] = edited
    path.write_bytes(b"".join(lines))


def migration_sql() -> str:
    migrations = Path(__file__).resolve().parents[2] / "storage" / "postgres" / "migrations"
    return " ".join(p.read_text() for p in migrations.glob("*.sql"))


async def tamper_postgres(request: pytest.FixtureRequest, victim: StoredEvent) -> None:
    sql = migration_sql()
    if "CREATE TABLE events" not in sql and "CREATE TABLE IF NOT EXISTS events" not in sql:
        pytest.skip("PostgreSQL table names not known yet (no events table migration)")
    import asyncpg  # type: ignore[import-not-found,unused-ignore]

    con = await asyncpg.connect(request.getfixturevalue("postgres_url"))
    try:
        async with con.transaction():
            await con.execute("ALTER TABLE events DISABLE TRIGGER USER")
            await con.execute(
                "UPDATE events SET payload = (payload::jsonb || '{\"forged\": true}'::jsonb)::json "
                "WHERE event_id = $1",
                victim.event_id,
            )
            await con.execute("ALTER TABLE events ENABLE TRIGGER USER")
    finally:
        await con.close()


async def test_bootstrap_rerun_keeps_every_event(store: EventStore) -> None:
    """The indexer's second run reuses its ids with new content: all of it is stored."""
    first, second = f.bootstrap_rerun(target_event=True)
    one = await store.write_batch(0, [env(first, 1)])
    assert (one.written, one.revisions, one.duplicates) == (8, 1, 0)  # two files share an id
    two = await store.write_batch(1, [env(second, 2)])
    assert (two.written, two.revisions, two.duplicates) == (8, 7, 0)
    assert two.outcomes == {"2-0": EntryOutcome(stored=1, revisions=7, duplicates=0)}
    # redelivered, both runs are duplicates whichever partition reads them
    again = await store.write_batch(2, [env(second, 3), env(first, 4)])
    assert (again.written, again.duplicates) == (0, 16)
    events = await all_events(store)
    revisions = {(e.event_id, e.revision) for e in events}
    assert {("bootstrap-demo-started", 2), ("file-7bfba6e0021f", 4)} <= revisions
    assert ((await store.graph()).node("Target", "demo") or {})["commit_sha"] == "8b77d01"
    assert await store.graph() == project(Graph(), events)
