"""PostgreSQL-specific behaviour of storage.postgres.store beyond the shared conformance suite.

Migrations and their lock, the append-only triggers, the COPY path at volume, the retry on
a cross-partition duplicate race, error mapping, and that the hot queries use indexes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from storage.base import BatchResult, StorageUnavailable
from storage.chain import GENESIS_HASH, content_digest, link, payload_json
from storage.envelope import Envelope
from storage.postgres import read as pg_read
from storage.postgres import store as postgres
from storage.postgres import write as pg_write
from storage.postgres.codecs import init_connection
from storage.postgres.migrate import available, migrate
from storage.postgres.store import PostgresStore
from storage.revisions import Known
from tests import factories as f

CLOSED_DSN = "postgresql://postgres@127.0.0.1:1/nothing"


def env(raw: dict[str, Any], n: int = 0) -> Envelope:
    return f.envelope(raw, entry_id=f"{n}-0", received_at=1_764_320_000.0 + n)


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(postgres_url, min_size=1, max_size=4)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def raw(postgres_url: str, pg: PostgresStore) -> AsyncIterator[asyncpg.Connection]:
    con = await asyncpg.connect(postgres_url)
    await init_connection(con)
    try:
        yield con
    finally:
        await con.close()


@pytest.mark.integration
async def test_concurrent_open_applies_each_migration_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url, min_size=1, max_size=2) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await stores[0].open()  # idempotent
        assert await migrate(postgres_url) == []
        con = await asyncpg.connect(postgres_url)
        try:
            rows = await con.fetch("SELECT version FROM schema_migrations ORDER BY version")
        finally:
            await con.close()
        assert [r["version"] for r in rows] == [v for v, _ in available()]
        assert rows[0]["version"] == "0001_init"
    finally:
        await asyncio.gather(*(s.close() for s in stores))


@pytest.mark.integration
async def test_migrate_reports_versions_applied(postgres_url: str) -> None:
    assert await migrate(postgres_url) == [v for v, _ in available()]
    assert await migrate(postgres_url) == []


@pytest.mark.integration
@pytest.mark.parametrize(
    "sql", ["UPDATE events SET event_type = 'x'", "DELETE FROM events", "TRUNCATE events"]
)
async def test_events_are_append_only(pg: PostgresStore, raw: asyncpg.Connection, sql: str) -> None:
    await pg.write_batch(0, [env(f.attempt_lifecycle("att-1", "task-1"))])
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await raw.execute(sql)
    assert await pg.count_events() == 5
    assert (await pg.verify_chain(0)).ok


@pytest.mark.integration
async def test_copy_path_stores_a_5000_event_batch(pg: PostgresStore) -> None:
    big = f.bootstrap_burst(4998)
    result = await pg.write_batch(3, [env(big)])
    assert (result.written, result.duplicates, result.revisions) == (5000, 0, 0)
    again = await pg.write_batch(3, [env(big, 1)])
    assert (again.written, again.duplicates) == (0, 5000)
    status = await pg.verify_chain(3)
    assert (status.ok, status.checked) == (True, 5000)
    assert await pg.partitions() == [3]


@pytest.mark.integration
async def test_cross_partition_race_retries_batch(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = f.attempt_lifecycle("att-race", "task-race")
    await pg.write_batch(1, [env(shared)])
    other = f.attempt_lifecycle("att-two", "task-two")
    calls: list[bool] = []
    real = pg_write._head_and_digests

    async def stale_first_check(
        con: asyncpg.Connection, partition: int, envelopes: Any, check: bool
    ) -> tuple[int, str, Known]:
        # The first checked lookup ran "before" partition 1 committed: it sees nothing.
        calls.append(check)
        seq, prev, known = await real(con, partition, envelopes, check)
        return (seq, prev, {}) if calls.count(True) == 1 else (seq, prev, known)

    monkeypatch.setattr(pg_write, "_head_and_digests", stale_first_check)
    result = await pg.write_batch(2, [env(shared, 1), env(other, 2)])
    # optimistic attempt refused, checked attempt lost the race, checked attempt again
    assert calls == [False, True, True]
    assert (result.written, result.duplicates) == (5, 5)
    assert await pg.count_events() == 10
    assert (await pg.verify_chain(2)).ok
    assert (await pg.verify_chain(2)).checked == 5


@pytest.mark.integration
async def test_batches_after_a_refused_optimistic_attempt_are_checked(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "CHECKED_AFTER_MISS", 2)
    checks: list[bool] = []
    real = pg_write.write_batch

    async def spy(
        con: asyncpg.Connection, partition: int, envelopes: Any, *, check: bool, **kw: Any
    ) -> BatchResult:
        checks.append(check)
        return await real(con, partition, envelopes, check=check, **kw)

    monkeypatch.setattr(pg_write, "write_batch", spy)
    first = f.attempt_lifecycle("att-1", "task-1")
    assert (await pg.write_batch(0, [env(first)])).written == 5
    assert checks == [False]  # nothing stored: one unchecked attempt
    # a redelivery mixed with new events and a new revision of a stored event
    changed = f.body("repo-a", "b-revision", [dict(first["events"][0], payload={"x": 1})])
    fresh = f.attempt_lifecycle("att-2", "task-2")
    result = await pg.write_batch(0, [env(first, 1), env(fresh, 2), env(changed, 3)])
    assert (result.written, result.duplicates, result.revisions) == (6, 5, 1)
    assert checks == [False, False, True]  # refused by the unique index, then checked
    for n in range(3):  # the next CHECKED_AFTER_MISS batches are checked, then optimistic
        later = f.attempt_lifecycle(f"att-later-{n}", "task-1")
        assert (await pg.write_batch(0, [env(later, 4 + n)])).written == 5
    assert checks[3:] == [True, True, False]
    assert await pg.count_events() == 26
    assert (await pg.verify_chain(0)).ok


@pytest.mark.integration
async def test_summary_counts_match_graph(pg: PostgresStore) -> None:
    await pg.write_batch(0, [env(f.tasks_with_dependencies())])
    await pg.write_batch(1, [env(f.attempt_lifecycle("att-1", "task-docs-1"), 1)])
    nodes, edges = (await pg.graph()).counts()
    summary = await pg.graph_summary()
    assert (summary.nodes_by_type, summary.edges_by_type) == (nodes, edges)
    assert await pg.rebuild_graph() == await pg.count_events()
    rebuilt = await pg.graph_summary()
    assert (rebuilt.nodes_by_type, rebuilt.edges_by_type) == (nodes, edges)


async def test_unreachable_server_is_storage_unavailable() -> None:
    store = PostgresStore(CLOSED_DSN, min_size=1, max_size=2)
    with pytest.raises(StorageUnavailable):
        await store.open()
    with pytest.raises(StorageUnavailable):
        await store.ping()
    with pytest.raises(StorageUnavailable):
        await migrate(CLOSED_DSN)
    await store.close()


async def _plan(con: asyncpg.Connection, run: Any) -> str:
    """EXPLAIN the statements ``run`` issues on ``con`` (captured by a query logger)."""
    logged: list[Any] = []
    con.add_query_logger(logged.append)
    await run(con)
    await asyncio.sleep(0)  # loggers are called via the event loop
    con.remove_query_logger(logged.append)
    assert logged, "no statement captured"
    plans = []
    for q in logged:
        rows = await con.fetch("EXPLAIN " + q.query, *q.args)
        plans.append("\n".join(r[0] for r in rows))
    return "\n".join(plans)


@pytest.mark.integration
async def test_hot_queries_use_indexes(pg: PostgresStore, raw: asyncpg.Connection) -> None:
    attempts = [
        f.event("attempt.started", {"attempt_id": f"a-{i}", "task_id": f"t-{i % 50}"}, at=i)
        for i in range(3000)
    ]
    await pg.write_batch(0, [env(f.body("tgt", "b-att", attempts))])
    await pg.write_batch(1, [env(f.bootstrap_burst(3000), 1)])
    await raw.execute("ANALYZE")
    page = await pg.list_events(limit=10)
    assert page.next_cursor is not None
    cursor = page.next_cursor

    plan = await _plan(raw, lambda c: pg_read.list_events(c, cursor, 50, {}))
    plan += await _plan(raw, lambda c: pg_read.list_events(c, cursor, 50, {"task_id": "t-3"}))
    plan += await _plan(raw, lambda c: pg_read.list_failures(c, None, 50))
    assert "Seq Scan on events" not in plan
    assert "Index" in plan
    first = await pg.list_attempts(limit=5)
    assert first.next_cursor is not None
    after = first.next_cursor
    plan = await _plan(raw, lambda c: pg_read.list_attempts(c, None, None, 20, after))
    plan += await _plan(raw, lambda c: pg_read.list_attempts(c, "tgt", None, 20, None))
    assert "Seq Scan on nodes" not in plan
    assert "Index" in plan


async def test_payload_column_holds_the_hashed_bytes(
    pg: PostgresStore, raw: asyncpg.Connection
) -> None:
    """json keeps the text as sent: the bytes the chain hashed, not a re-encoding."""
    payload = {"z": -0.0, "a": 1e20, "m": 1.0}
    await pg.write_batch(0, [env(f.body("repo-a", "b", [f.event("x", payload)]))])
    text = await raw.fetchval("SELECT payload::text FROM events")
    assert text.encode() == payload_json(payload) == b'{"a":1e+20,"m":1.0,"z":-0.0}'


async def test_rows_written_under_jsonb_still_verify_after_0002(postgres_url: str) -> None:
    """A database of the 0001 schema (jsonb payloads), hashed over the values as sent,
    upgraded by 0002: the existing chain still verifies (no false tamper)."""
    versions = available()
    con = await asyncpg.connect(postgres_url)
    try:
        await con.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await con.execute(versions[0][1])
        await con.execute("INSERT INTO schema_migrations(version) VALUES ($1)", versions[0][0])
        prev = GENESIS_HASH
        payloads: list[dict[str, Any]] = [
            {"big": 1e20, "one": 1.0, "huge": 12345678901234567890},
            {"s": "é"},
        ]
        for seq, payload in enumerate(payloads, start=1):
            hash_ = link(
                event_id=f"e{seq}", event_type="x", timestamp="2026-11-28T09:00:00Z",
                actor_id=None, payload=payload, prev_hash=prev,
            )  # fmt: skip
            await con.execute(
                "INSERT INTO events(partition, seq, event_id, event_type, ts, ts_text, payload, "
                "bundle_id, target, received_at, prev_hash, hash, digest) VALUES (0, $1, $2, "
                "'x', now(), '2026-11-28T09:00:00Z', $3::jsonb, 'b', 't', 'r', $4, $5, 'd')",
                seq, f"e{seq}", orjson.dumps(payload).decode(), prev, hash_,
            )  # fmt: skip
            prev = hash_
        await con.execute("INSERT INTO heads VALUES (0, 2, $1)", prev)
    finally:
        await con.close()
    store = PostgresStore(postgres_url, min_size=1, max_size=2)
    await store.open()  # applies 0002
    try:
        status = await store.verify_chain(0)
        assert status.ok, status
        assert status.checked == 2
        # and the chain continues over the upgraded rows
        await store.write_batch(0, [env(f.body("t", "b2", [f.event("x", {"n": -0.0})]))])
        status = await store.verify_chain(0)
        assert (status.ok, status.checked) == (True, 3)
    finally:
        await store.close()


@pytest.mark.integration
async def test_migration_0003_keeps_existing_events_as_revision_1(postgres_url: str) -> None:
    """A database written before revisions: its rows become revision 1, the unique key moves
    from event_id to (event_id, revision), and the chain goes on."""
    con = await asyncpg.connect(postgres_url)
    try:
        await con.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, sql in available():
            if version >= "0003":
                break
            await con.execute(sql)
            await con.execute("INSERT INTO schema_migrations(version) VALUES ($1)", version)
        ts, payload = "2026-11-20T09:00:00Z", {"target_id": "demo", "commit_sha": "3f1c2a9"}
        hash_ = link(
            event_id="bootstrap-demo-started", event_type="bootstrap.started", timestamp=ts,
            actor_id=None, payload=payload, prev_hash=GENESIS_HASH,
        )  # fmt: skip
        digest = content_digest(
            event_type="bootstrap.started", timestamp=ts, actor_id=None, payload=payload
        )
        await con.execute(
            "INSERT INTO events(partition, seq, event_id, event_type, ts, ts_text, actor_id, "
            "payload, bundle_id, target, received_at, prev_hash, hash, digest) VALUES "
            "(0, 1, 'bootstrap-demo-started', 'bootstrap.started', $1::text::timestamptz, $1, "
            "NULL, $2::json, 'b1', 'demo', $1, $3, $4, $5)",
            ts, payload_json(payload).decode(), GENESIS_HASH, hash_, digest,
        )  # fmt: skip
        await con.execute("INSERT INTO heads VALUES (0, 1, $1)", hash_)
    finally:
        await con.close()

    store = PostgresStore(postgres_url, min_size=1, max_size=2)
    await store.open()  # applies 0003
    try:
        (old,) = [e async for e in store.iter_events()]
        assert (old.revision, old.digest) == (1, digest)
        rerun = f.body(
            "demo", "b2",
            [{"event_id": "bootstrap-demo-started", "event_type": "bootstrap.started",
              "timestamp": "2026-11-27T09:00:00Z",
              "payload": {"target_id": "demo", "commit_sha": "8b77d01"}}],
        )  # fmt: skip
        result = await store.write_batch(0, [env(rerun, 1)])
        assert (result.written, result.revisions) == (1, 1)
        again = f.body("demo", "b1", [{"event_id": "bootstrap-demo-started",
                                       "event_type": "bootstrap.started", "timestamp": ts,
                                       "payload": payload}])  # fmt: skip
        assert (await store.write_batch(3, [env(again, 2)])).duplicates == 1
        assert [(e.seq, e.revision) async for e in store.iter_events()] == [(1, 1), (2, 2)]
        assert (await store.verify_chain(0)).ok
    finally:
        await store.close()
    con = await asyncpg.connect(postgres_url)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await con.execute(
                "INSERT INTO events(partition, seq, event_id, event_type, ts, ts_text, payload, "
                "bundle_id, target, received_at, prev_hash, hash, digest, revision) "
                "SELECT 9, 1, event_id, event_type, ts, ts_text, payload, bundle_id, target, "
                "received_at, prev_hash, hash, 'other', 2 FROM events WHERE seq = 1"
            )
    finally:
        await con.close()


@pytest.mark.integration
async def test_concurrent_revisions_across_partitions_get_distinct_numbers(
    pg: PostgresStore,
) -> None:
    """Writers of eight partitions store new content under one event_id at once: every
    content is kept once, with revisions 1..8, whatever the interleaving."""

    def body(n: int) -> dict[str, Any]:
        ev = f.event("repo.indexed", {"target_id": "demo", "run": n}, event_id="repo-indexed")
        return f.body("demo", f"b{n}", [ev])

    results = await asyncio.gather(*(pg.write_batch(n, [env(body(n), n)]) for n in range(8)))
    assert sum(r.written for r in results) == 8
    events = [e async for e in pg.iter_events()]
    assert sorted(e.revision for e in events) == list(range(1, 9))
    assert sorted(e.payload["run"] for e in events) == list(range(8))
    again = await asyncio.gather(*(pg.write_batch(7 - n, [env(body(n), n)]) for n in range(8)))
    assert sum(r.duplicates for r in again) == 8
    for partition in await pg.partitions():
        assert (await pg.verify_chain(partition)).ok
