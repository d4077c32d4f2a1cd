"""The topology index: order-independent extraction, kept by both write paths, read by key.

The pure rules (:mod:`storage.topology`) are checked with hypothesis for every order of a
set of events with duplicates and revisions; the stored index of each backend must equal
what the pure rules give, however the events were batched; the read queries must be index
lookups (query plans), and PostgreSQL's migration backfill must index a log exactly as
the write path does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.base import EventStore
from storage.ndjson import graph as ndjson_graph
from storage.ndjson import index as ndjson_index
from storage.ndjson import read as ndjson_read
from storage.ndjson.store import NdjsonStore
from storage.postgres import topology as pg_topology
from storage.topology import (
    AREA,
    DEPENDENCY,
    SUBSYSTEM,
    SUMMARY,
    TopoRow,
    latest,
    rows_of_envelopes,
)
from tests import factories as f

KINDS = {
    "topo.indexed": SUMMARY,
    "topo.area.discovered": AREA,
    "topo.subsystem.discovered": SUBSYSTEM,
    "topo.dependency.discovered": DEPENDENCY,
}


def _payload(kind: str, target: str, item: int, extra: int) -> dict[str, Any]:
    base: dict[str, Any] = {"target_id": target, "n": extra}
    if kind == "topo.area.discovered":
        base["area_id"] = f"area/{item}"
    elif kind == "topo.subsystem.discovered":
        base["subsystem_id"] = f"subsystem/{item}"
    elif kind == "topo.dependency.discovered":
        base.update(from_subsystem_id=f"subsystem/{item}", to_subsystem_id="subsystem/0")
    return base


# Few ids, items and timestamps: collisions (same item, same time, same event_id with new
# content = a revision) are the cases the order must not matter for.
topo_event = st.builds(
    lambda kind, target, item, extra, second, eid: f.event(
        kind, _payload(kind, target, item, extra), at=second, event_id=f"topo-{eid}"
    ),
    st.sampled_from(sorted(KINDS)),
    st.sampled_from(["repo-a", "repo-b"]),
    st.integers(0, 2),
    st.integers(0, 3),
    st.integers(0, 2),
    st.integers(0, 5),
)
other_event = st.builds(lambda n: f.event("file.discovered", {"n": n}), st.integers(0, 3))
events_st = st.lists(st.one_of(topo_event, other_event), min_size=1, max_size=25)


def _bodies(events: list[dict[str, Any]], cuts: list[int]) -> list[dict[str, Any]]:
    """``events`` cut into bundles of the target ``repo-a`` at ``cuts``."""
    edges = sorted({0, len(events), *(c % (len(events) + 1) for c in cuts)})
    return [f.body("repo-a", f"b-{i}", events[a:b]) for i, (a, b) in
            enumerate(itertools.pairwise(edges)) if b > a]  # fmt: skip


def expected(events: list[dict[str, Any]]) -> list[TopoRow]:
    return sorted(rows_of_envelopes([f.envelope(f.body("repo-a", "all", events))]),
                  key=lambda r: r.key)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(events_st, st.randoms(use_true_random=False))
def test_latest_row_per_item_is_order_independent(
    events: list[dict[str, Any]], rnd: random.Random
) -> None:
    shuffled = events + rnd.sample(events, len(events) // 2)  # with duplicates
    rnd.shuffle(shuffled)
    assert expected(shuffled) == expected(events)
    # merged in pieces, as batch after batch is upserted
    pieces = [rows_of_envelopes([f.envelope(b)]) for b in _bodies(shuffled, [3, 7, 11])]
    merged = sorted(latest(r for piece in pieces for r in piece), key=lambda r: r.key)
    assert merged == expected(events)


async def index_of(store: EventStore, targets: tuple[str, ...] = ("repo-a", "repo-b")) -> Any:
    """Everything the index holds, through the read interface."""
    out: dict[tuple[str, str], Any] = {}
    for target in targets:
        summary = await store.topology_summary(target)
        out[(target, SUMMARY)] = None if summary is None else (summary.payload, summary.counts)
        for kind in (AREA, SUBSYSTEM, DEPENDENCY):
            out[(target, kind)] = (await store.topology_items(target, kind, limit=1000)).items
    return out


def index_from_rows(rows: list[TopoRow]) -> Any:
    out: dict[tuple[str, str], Any] = {}
    for target in ("repo-a", "repo-b"):
        mine = [r for r in rows if r.target == target]
        summary = next((r for r in mine if r.kind == SUMMARY), None)
        counts: dict[str, int] = {}
        for r in mine:
            if r.kind != SUMMARY:
                counts[r.kind] = counts.get(r.kind, 0) + 1
        out[(target, SUMMARY)] = None if summary is None else (dict(summary.payload), counts)
        for kind in (AREA, SUBSYSTEM, DEPENDENCY):
            out[(target, kind)] = [dict(r.payload) for r in sorted(mine, key=lambda r: r.item)
                                   if r.kind == kind]  # fmt: skip
    return out


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events_st, st.randoms(use_true_random=False), st.lists(st.integers(0, 30), max_size=4))
def test_ndjson_index_equals_the_pure_rows_for_any_batching(
    tmp_path_factory: pytest.TempPathFactory,
    events: list[dict[str, Any]],
    rnd: random.Random,
    cuts: list[int],
) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)

    async def run() -> Any:
        store = NdjsonStore(tmp_path_factory.mktemp("topo"))
        await store.open()
        try:
            for n, raw in enumerate(_bodies(shuffled, cuts)):
                await store.write_batch(n % 2, [f.envelope(raw, entry_id=f"{n}-0")])
            return await index_of(store)
        finally:
            await store.close()

    assert asyncio.run(run()) == index_from_rows(expected(events))


async def test_both_backends_keep_the_newest_run(store: EventStore) -> None:
    first = f.topology_run(commit_sha="aaaaaaaa11", at=0)
    # a week later: same commit re-indexed (same ids, new timestamps: revisions), one area
    # gone from the run, a new dependency
    again = f.topology_run(commit_sha="aaaaaaaa11", at=7 * 86400, areas=("docs", "tests"),
                           dependencies=(("services/api", "services/db"),
                                         ("tools/cli", "services/api")))  # fmt: skip
    await store.write_batch(1, [f.envelope(again, entry_id="1-0")])
    await store.write_batch(0, [f.envelope(first, entry_id="2-0")])  # older, arrives last
    summary = await store.topology_summary("leviathan-demo")
    assert summary is not None
    assert summary.payload["dependencies_count"] == 2
    assert summary.timestamp == f.ts(7 * 86400)
    assert summary.counts == {AREA: 3, SUBSYSTEM: 3, DEPENDENCY: 2}
    deps = (await store.topology_items("leviathan-demo", DEPENDENCY)).items
    assert [(d["from_subsystem_id"], d["to_subsystem_id"]) for d in deps] == [
        ("subsystem/services/api", "subsystem/services/db"),
        ("subsystem/tools/cli", "subsystem/services/api"),
    ]
    areas = (await store.topology_items("leviathan-demo", AREA, limit=2)).items
    assert [a["area_id"] for a in areas] == ["area/docs", "area/tests"]
    assert await store.topology_summary("other-target") is None
    assert (await store.topology_items("other-target", AREA)).items == []


async def test_both_backends_index_like_the_pure_rules(store: EventStore) -> None:
    rnd = random.Random(7)
    events = [f.event(kind, _payload(kind, rnd.choice(["repo-a", "repo-b"]), rnd.randint(0, 4),
                                     rnd.randint(0, 9)),
                      at=rnd.randint(0, 5), event_id=f"topo-{rnd.randint(0, 40)}")
              for kind in rnd.choices(sorted(KINDS), k=120)]  # fmt: skip
    shuffled = list(events)
    rnd.shuffle(shuffled)
    for n, raw in enumerate(_bodies(shuffled, [10, 25, 50, 80, 100])):
        await store.write_batch(n % 3, [f.envelope(raw, entry_id=f"{n}-0")])
    assert await index_of(store) == index_from_rows(expected(events))


def test_ndjson_reads_are_primary_key_searches(tmp_path: Path) -> None:
    con = ndjson_index.connect(tmp_path)
    try:
        queries = [
            (ndjson_read.TOPOLOGY_SUMMARY_SQL, ("t", SUMMARY)),
            (ndjson_read.TOPOLOGY_COUNTS_SQL, ("t",)),
            (ndjson_read.TOPOLOGY_ITEMS_SQL, ("t", AREA, "", 10)),
        ]
        for sql, args in queries:
            plan = " | ".join(r[3] for r in con.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            assert "SEARCH topology USING PRIMARY KEY" in plan, plan
            assert "SCAN" not in plan, plan
            assert "events" not in plan, plan
    finally:
        con.close()


def _plan_nodes(plan: Any) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


async def test_postgres_reads_use_the_primary_key_at_scale(postgres_url: str) -> None:
    """20,000 index rows over 400 targets: each read is an index scan of one target."""
    from storage.postgres.store import PostgresStore

    store = PostgresStore(postgres_url, min_size=1, max_size=2)
    await store.open()
    await store.close()
    con = await asyncpg.connect(postgres_url)
    try:
        await con.execute(
            "INSERT INTO topology SELECT 'repo-' || (g % 400), "
            "(ARRAY['summary','area','subsystem','dependency'])[1 + g / 400 % 4], "
            "CASE WHEN g / 400 % 4 = 0 THEN '' ELSE 'item-' || g END, "
            "'2026-11-28T09:00:00.000000Z', 'e' || g, 'd', '{}'::jsonb "
            "FROM generate_series(0, 19999) g ON CONFLICT DO NOTHING"
        )
        await con.execute("ANALYZE topology")
        queries = [
            (pg_topology.SUMMARY_SQL, ("repo-7", SUMMARY)),
            (pg_topology.COUNTS_SQL, ("repo-7",)),
            (pg_topology.ITEMS_SQL, ("repo-7", AREA, "", 1001)),
        ]
        for sql, args in queries:
            plan = json.loads(await con.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
            nodes = _plan_nodes(plan[0]["Plan"])
            kinds = {n["Node Type"] for n in nodes}
            assert "Seq Scan" not in kinds, kinds
            assert {n.get("Index Name") for n in nodes} & {"topology_pkey"}, nodes
            assert {n.get("Relation Name") for n in nodes} <= {"topology", None}, nodes
    finally:
        await con.close()


async def test_postgres_backfill_indexes_a_log_like_the_write_path(postgres_url: str) -> None:
    """Migration 0004 indexes the topo events already in the log with the same keys,
    versions and winners as storage.topology (run here over a log the write path indexed)."""
    from storage.postgres.store import PostgresStore

    store = PostgresStore(postgres_url, min_size=1, max_size=2)
    await store.open()
    try:
        rnd = random.Random(3)
        for n in range(6):
            raw = f.topology_run(target=rnd.choice(["a", "b"]), commit_sha=f"c{n}0000000",
                                 at=rnd.randint(0, 3) * 60)  # fmt: skip
            await store.write_batch(n % 2, [f.envelope(raw, entry_id=f"{n}-0")])
        odd = f.body(
            "a",
            "odd",
            [
                # the longest target_id ingest accepts, and the odd types it accepts too
                f.event("topo.area.discovered", {"target_id": "x" * 255}),
                f.event("topo.area.discovered", {"target_id": 7, "area_id": []}),
                f.event("topo.dependency.discovered", {"from_subsystem_id": 1}),
            ],
        )
        await store.write_batch(0, [f.envelope(odd, entry_id="9-0")])  # fmt: skip
    finally:
        await store.close()
    sql = resources.files("storage.postgres").joinpath("migrations/0004_topology.sql").read_text()
    backfill = sql[sql.index("WITH topo AS") :]
    con = await asyncpg.connect(postgres_url)
    try:
        query = (
            "SELECT target, kind, item, version_ts, event_id, digest, payload::text FROM topology"
        )
        written = sorted(tuple(r) for r in await con.fetch(query))
        assert len(written) > 10
        async with con.transaction():
            await con.execute("DELETE FROM topology")
            await con.execute(backfill)
        assert sorted(tuple(r) for r in await con.fetch(query)) == written
    finally:
        await con.close()


def test_sqlite_compares_versions_as_python_does(tmp_path: Path) -> None:
    """The upsert's row-value comparison must agree with TopoRow.version (code points)."""
    con = ndjson_index.connect(tmp_path)
    try:
        ids = ["e-\u00e9", "e-z", "e-\U0001f600", "E-a", "e-\uffff"]
        for eid in ids:
            row = TopoRow("t", AREA, "i", "2026-01-01T00:00:00.000000Z", eid, "d", {"e": eid})
            con.execute("BEGIN")
            ndjson_graph.merge_topology(con, [row])
            con.execute("COMMIT")
        stored = con.execute("SELECT event_id FROM topology").fetchone()
        assert stored == (max(ids),)
    except sqlite3.Error:
        raise
    finally:
        con.close()


async def test_ndjson_index_made_before_the_table_is_backfilled_on_open(tmp_path: Path) -> None:
    store = NdjsonStore(tmp_path)
    await store.open()
    try:
        await store.write_batch(0, [f.envelope(f.topology_run(at=60), entry_id="1-0")])
        before = await index_of(store, ("leviathan-demo",))
    finally:
        await store.close()
    con = sqlite3.connect(tmp_path / ndjson_index.INDEX_FILE)
    con.execute("DROP TABLE topology")  # as an index written before the table existed
    con.commit()
    con.close()
    again = NdjsonStore(tmp_path)
    await again.open()
    try:
        assert await index_of(again, ("leviathan-demo",)) == before
        assert before[("leviathan-demo", AREA)]
    finally:
        await again.close()
