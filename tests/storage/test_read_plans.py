"""Every read endpoint's statements, EXPLAINed on both backends: index ranges and probes.

Each store method the query API calls runs over a store with thousands of events, nodes
and failures while every statement it issues is captured (SQLite's trace callback on the
reader connections, asyncpg's query logger), then EXPLAINed: no full scan of a table, no
sort over one (a sort of at most a page of rows, or of one attempt's events, is fine), and
a bounded number of statements per call, whatever the page size (no query per item).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from storage.base import EventStore
from storage.envelope import Envelope
from storage.ndjson import index as ndjson_index
from storage.ndjson.store import NdjsonStore
from storage.postgres.codecs import init_connection
from storage.postgres.store import PostgresStore
from tests import factories as f

ATTEMPTS = 3000
BIG = {"events", "nodes", "edges", "artifacts"}
# the statements each call may issue at most (transaction control not counted)
MAX_STATEMENTS = 4
# PostgreSQL: every statement is a round trip, which under load waits its turn on the
# event loop again; the detail pages and the task lists are built in one or two
FEWEST = {"attempt": 2, "task": 1, "tasks": 1, "tasks page 2": 1, "tasks of a target": 1}

# The newest events, no filter: a walk back from the end of the rowid order, which stops
# after LIMIT rows (SQLite's plan calls it a SCAN: it has no index to name).
NEWEST = re.compile(r"SELECT [\w, ]+ FROM events ORDER BY gid DESC LIMIT \d+")

Call = Callable[[EventStore], Awaitable[Any]]


def env(raw: dict[str, Any], n: int) -> Envelope:
    return f.envelope(raw, entry_id=f"{n}-0", received_at=1_764_320_000.0 + n)


async def seed(store: EventStore) -> None:
    n = 0
    for start in range(0, ATTEMPTS, 100):
        envelopes = []
        for i in range(start, start + 100):
            outcome = "failed" if i % 5 == 0 else "succeeded"
            task, target = f"task-{i % 300}", f"repo-{i % 7}"
            raw = f.attempt_lifecycle(f"att-{i}", task, start=i, target=target, outcome=outcome)
            raw["events"].append(f.event("task.created", {"task_id": task, "target_id": target}))
            envelopes.append(env(raw, n))
            n += 1
        await store.write_batch(n % 8, envelopes)
    for k in range(3):
        await store.write_batch(k, [env(f.bootstrap_burst(4000, target="repo-big"), n + k)])


async def calls(store: EventStore) -> dict[str, Call]:
    first = await store.list_events(limit=50)
    attempts = await store.list_attempts(limit=20)
    failures = await store.list_failures(limit=20)
    tasks = await store.list_tasks(limit=10)
    return {
        "graph summary": lambda s: s.graph_summary(20),
        "attempts": lambda s: s.list_attempts(limit=100),
        "attempts page 2": lambda s: s.list_attempts(limit=50, cursor=attempts.next_cursor),
        "attempts of a target": lambda s: s.list_attempts(target="repo-3", limit=50),
        "attempts by status": lambda s: s.list_attempts(status="failed", limit=50),
        "attempt": lambda s: s.get_attempt("att-17"),
        "attempt exists": lambda s: s.attempt_exists("att-17"),
        "failures": lambda s: s.list_failures(limit=100),
        "failures page 2": lambda s: s.list_failures(limit=20, cursor=failures.next_cursor),
        "failures of a target": lambda s: s.list_failures(target="repo-3", limit=20),
        "recent": lambda s: s.recent_events(200),
        "events": lambda s: s.list_events(limit=100),
        "events after": lambda s: s.list_events(after=first.next_cursor, limit=100),
        "events of a target": lambda s: s.list_events(target="repo-3", limit=100),
        "events of a task": lambda s: s.list_events(task_id="task-3", limit=100),
        "events of an attempt": lambda s: s.list_events(attempt_id="att-3", limit=100),
        "events of a type": lambda s: s.list_events(event_type="attempt.failed", limit=100),
        "tasks": lambda s: s.list_tasks(limit=40),
        "tasks page 2": lambda s: s.list_tasks(limit=10, cursor=tasks.next_cursor),
        "tasks of a target": lambda s: s.list_tasks(target="repo-3", limit=100),
        "task": lambda s: s.get_task("task-3"),
    }


# -- NDJSON ---------------------------------------------------------------------------


@pytest.fixture
async def ndjson(tmp_path: Path) -> AsyncIterator[NdjsonStore]:
    store = NdjsonStore(tmp_path / "log")
    await store.open()
    try:
        await seed(store)
        yield store
    finally:
        await store.close()


def _sqlite_plan(con: sqlite3.Connection, sql: str) -> list[str]:
    return [str(r[3]) for r in con.execute(f"EXPLAIN QUERY PLAN {sql}")]


async def test_ndjson_reads_are_index_searches(
    ndjson: NdjsonStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[str] = []
    connect = ndjson_index.connect_reader

    def traced(directory: Path, busy_ms: int = 30_000) -> sqlite3.Connection:
        con = connect(directory, busy_ms)
        con.set_trace_callback(logged.append)
        return con

    await ndjson.close()
    monkeypatch.setattr(ndjson_index, "connect_reader", traced)
    await ndjson.open()
    plans = sqlite3.connect(tmp_path / "log" / ndjson_index.INDEX_FILE)
    try:
        for name, call in (await calls(ndjson)).items():
            logged.clear()
            await call(ndjson)
            statements = [s for s in logged if s not in ("BEGIN", "COMMIT")]
            assert 0 < len(statements) <= MAX_STATEMENTS, (name, statements)
            for sql in statements:
                plan = _sqlite_plan(plans, sql)
                for step in plan:
                    words = step.split()
                    if words[0] == "SCAN" and not NEWEST.fullmatch(sql):
                        assert words[1] not in BIG, (name, sql, plan)
                    assert "TEMP B-TREE" not in step, (name, sql, plan)
                    if words[:2] == ["SEARCH", "edges"]:  # a probe by node, not by edge type
                        assert "src=" in step or "dst=" in step, (name, sql, plan)
    finally:
        plans.close()


# -- PostgreSQL -----------------------------------------------------------------------


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


def _check_pg_plan(name: str, sql: str, plan: dict[str, Any]) -> None:
    for node in _nodes(plan):
        kind = node["Node Type"]
        if kind == "Seq Scan":
            assert node.get("Relation Name") not in BIG, (name, sql, node)
        if kind in ("Sort", "Incremental Sort"):
            # a sort of a page (or of one attempt's events), never of a table
            rows = max(int(c.get("Plan Rows", 0)) for c in node.get("Plans", [node]))
            assert rows <= 2000, (name, sql, rows)


@pytest.mark.integration
async def test_postgres_reads_are_index_searches(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, min_size=1, max_size=1)
    await store.open()
    raw = await asyncpg.connect(postgres_url)
    await init_connection(raw)
    try:
        await seed(store)
        await raw.execute("ANALYZE")
        logged: list[Any] = []
        async with store.pool.acquire() as con:
            con.add_query_logger(logged.append)
        for name, call in (await calls(store)).items():
            # once first: the connection looks up a result type it has not seen yet
            # (asyncpg's introspection, once per connection), which is no read's own
            await call(store)
            logged.clear()
            await call(store)
            statements = list(logged)  # a released connection is not reset (keep_session)
            most = FEWEST.get(name, MAX_STATEMENTS)
            assert 0 < len(statements) <= most, (name, [q.query for q in statements])
            for q in statements:
                found = await raw.fetchval("EXPLAIN (FORMAT JSON) " + q.query, *q.args)
                plan = json.loads(found) if isinstance(found, str) else found
                _check_pg_plan(name, q.query, plan[0]["Plan"])
    finally:
        await raw.close()
        await store.close()
