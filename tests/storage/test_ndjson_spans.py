"""NDJSON event spans and listed node columns: what the reads by target, task and attempt
and the listings read.

The events of a target, task or attempt are found through one span per run of a batch's
events with that value, and attempts and tasks are filtered on plain ``target``/``status``
columns kept by each merge. These tests check both against the stored events and
properties themselves, after writes in any order with repeated ids, after retention,
and on an index file made before either existed (migrated at open).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.ndjson import graph as ndjson_graph
from storage.ndjson import index as ndjson_index
from storage.ndjson.store import NdjsonStore
from storage.views import EventView
from tests import factories as f

TARGETS = ("repo-a", "repo-b", "repo-\U0001f600")
OUTCOMES = ("succeeded", "failed")

# (partition, [(target, attempt number, outcome), ...]) per batch
Batch = tuple[int, list[tuple[str, int, str]]]
batches = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.lists(
            st.tuples(st.sampled_from(TARGETS), st.integers(0, 12), st.sampled_from(OUTCOMES)),
            min_size=1,
            max_size=6,
        ),
    ),
    min_size=1,
    max_size=12,
)


def _envelopes(batch: list[tuple[str, int, str]], n: int) -> list[Any]:
    # an attempt number seen again repeats its event ids: duplicates take no gid, and an
    # outcome that differs is a revision of the same ids
    out = []
    for k, (target, i, outcome) in enumerate(batch):
        raw = f.attempt_lifecycle(f"att-{i}", f"task-{i % 4}", target=target, outcome=outcome)
        raw["events"].append(
            f.event("task.created", {"task_id": f"task-{i % 4}", "target_id": target})
        )
        out.append(f.envelope(raw, entry_id=f"{n}-{k}", received_at=1_764_320_000.0 + n))
    return out


async def _write(store: NdjsonStore, written: list[Batch]) -> None:
    for n, (partition, batch) in enumerate(written):
        await store.write_batch(partition, _envelopes(batch, n))


async def _pages(store: NdjsonStore, limit: int, **filters: str) -> list[EventView]:
    seen: list[EventView] = []
    cursor = None
    while True:
        page = await store.list_events(after=cursor, limit=limit, **filters)
        seen += page.items
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def _key(e: EventView) -> tuple[str, int]:
    return (e.event_id, e.revision)


def _payload_id(e: EventView, name: str) -> Any:
    value = e.payload.get(name)
    return value if isinstance(value, str) else None


def _matches(e: EventView, given: dict[str, str]) -> bool:
    """What the index stores: the bundle's target and the event's type; a payload's task
    and attempt ids when they are strings."""
    for name, value in given.items():
        actual = getattr(e, name) if name in ("target", "event_type") else _payload_id(e, name)
        if actual != value:
            return False
    return True


async def _check_target_reads(store: NdjsonStore, limit: int) -> None:
    """Every spanned filter, alone and with the others, pages exactly the matching events
    in log order; an attempt's page lists its events in the same order."""
    every = await _pages(store, 1000)
    tasks = sorted({t for e in every if (t := _payload_id(e, "task_id"))})
    attempts = sorted({a for e in every if (a := _payload_id(e, "attempt_id"))})
    filters: list[dict[str, str]] = [{"target": t} for t in TARGETS]
    filters += [{"target": t, "event_type": "attempt.failed"} for t in TARGETS]
    filters += [{"task_id": t} for t in tasks[:3]]
    filters += [{"attempt_id": a} for a in attempts[:3]]
    filters += [{"attempt_id": a, "target": TARGETS[0], "task_id": "task-1"} for a in attempts[:3]]
    for chosen in filters:
        expected = [_key(e) for e in every if _matches(e, chosen)]
        got = await _pages(store, limit, **chosen)
        assert [_key(e) for e in got] == expected, chosen
    for attempt_id in attempts[:3]:
        detail = await store.get_attempt(attempt_id)
        assert detail is not None
        mine = [_key(e) for e in every if _payload_id(e, "attempt_id") == attempt_id]
        assert [_key(e) for e in detail.events] == mine


def _check_listed_columns(directory: Path) -> None:
    con = sqlite3.connect(directory / ndjson_index.INDEX_FILE)
    try:
        rows = con.execute("SELECT type, vals, target, status FROM nodes").fetchall()
    finally:
        con.close()
    assert rows
    for node_type, vals, target, status in rows:
        assert (target, status) == ndjson_graph.listed_columns(node_type, orjson.loads(vals))


async def _check_listings(store: NdjsonStore) -> None:
    graph = await store.graph()
    for target in TARGETS:
        for status in (None, "failed", "succeeded"):
            page = await store.list_attempts(target=target, status=status, limit=1000)
            expected = {
                node_id
                for (node_type, node_id), props in graph.nodes.items()
                if node_type == "Attempt"
                and props["target"].value == target
                and status in (None, props["status"].value)
            }
            assert {a.attempt_id for a in page.items} == expected, (target, status)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(written=batches, limit=st.integers(1, 7))
def test_target_reads_and_listings_match_what_is_stored(written: list[Batch], limit: int) -> None:
    async def run(directory: Path) -> None:
        store = NdjsonStore(directory)
        await store.open()
        try:
            await _write(store, written)
            await _check_target_reads(store, limit)
            await _check_listings(store)
        finally:
            await store.close()
        _check_listed_columns(directory)

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))


async def test_spans_below_the_oldest_kept_event_go_with_retention(tmp_path: Path) -> None:
    store = NdjsonStore(tmp_path)
    await store.open()
    try:
        # two old batches per partition, then new ones
        old = [(p, [(t, p * 3 + k, "failed") for k, t in enumerate(TARGETS)]) for p in (0, 1)]
        await _write(store, old * 2)
        await store.retain(1_764_320_000.0 + 2)  # the first two batches arrived before
        await _write(store, [(0, [("repo-a", 20, "succeeded")])])
        await _check_target_reads(store, 2)
    finally:
        await store.close()
    con = sqlite3.connect(tmp_path / ndjson_index.INDEX_FILE)
    try:
        oldest = con.execute("SELECT min(gid) FROM events").fetchone()[0]
        assert con.execute(
            "SELECT count(*) FROM event_spans WHERE last_gid < ?", (oldest,)
        ).fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM event_spans").fetchone()[0] > 0
    finally:
        con.close()


# The layout of an index file before spans and listed columns (the read expressions its
# partial indexes were built on).
_OLD_TARGET = "COALESCE(json_extract(vals, '$.target'), json_extract(vals, '$.target_id'))"
_OLD_STATUS = "json_extract(vals, '$.status')"


def _as_before_spans(directory: Path) -> None:
    con = sqlite3.connect(directory / ndjson_index.INDEX_FILE, isolation_level=None)
    try:
        con.execute("DROP TABLE event_spans")
        for t in ("attempt", "task"):
            for column in ("target", "status"):
                con.execute(f"DROP INDEX nodes_{t}_by_{column}")
        con.execute("ALTER TABLE nodes DROP COLUMN target")
        con.execute("ALTER TABLE nodes DROP COLUMN status")
        for t in ("Attempt", "Task"):
            for column, expr in (("target", _OLD_TARGET), ("status", _OLD_STATUS)):
                con.execute(
                    f"CREATE INDEX nodes_{t.lower()}_{column} ON nodes({expr}) WHERE type = '{t}'"
                )
        for column in ("target", "task_id", "attempt_id"):
            con.execute(f"CREATE INDEX events_{column.removesuffix('_id')} ON events({column})")
    finally:
        con.close()


def _indexes(directory: Path) -> set[str]:
    con = sqlite3.connect(directory / ndjson_index.INDEX_FILE)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        con.close()


async def test_an_index_from_before_spans_is_migrated_at_open(tmp_path: Path) -> None:
    written: list[Batch] = [
        (p, [(TARGETS[(p + k) % 3], p * 5 + k, OUTCOMES[k % 2]) for k in range(4)])
        for p in range(4)
    ]
    store = NdjsonStore(tmp_path)
    await store.open()
    try:
        await _write(store, written)
        before = {t: await _pages(store, 3, target=t) for t in TARGETS}
        attempts = await store.list_attempts(target="repo-b", status="failed", limit=100)
    finally:
        await store.close()
    _as_before_spans(tmp_path)
    assert "events_target" in _indexes(tmp_path)

    store = NdjsonStore(tmp_path)
    await store.open()  # migrates
    try:
        assert {t: await _pages(store, 3, target=t) for t in TARGETS} == before
        again = await store.list_attempts(target="repo-b", status="failed", limit=100)
        assert attempts.items
        assert again.items == attempts.items
        await _write(store, [(2, [("repo-a", 40, "failed")])])  # and it takes new batches
        await _check_target_reads(store, 2)
        await _check_listings(store)
    finally:
        await store.close()
    names = _indexes(tmp_path)
    assert not {"events_target", "events_task", "events_attempt"} & names
    assert not {"nodes_attempt_target", "nodes_attempt_status", "nodes_task_target"} & names
    assert {"nodes_attempt_by_target", "nodes_task_by_status"} <= names
    _check_listed_columns(tmp_path)

    con = ndjson_index.connect(tmp_path)  # an index already migrated is left alone
    try:
        assert not ndjson_index.migrate_listed_columns(con)
    finally:
        con.close()
