"""Query API latency over a large PostgreSQL store (target: p99 <= 50 ms).

Pipeline position: the ingest tier's read side end to end: real aiohttp app (query routes
+ store cleanup_ctx) over HTTP on localhost, PostgresStore, real PostgreSQL. Run
``python -m bench.query [--events 1000000] [--attempts 50000] [--requests 200]``.

Seeding goes through ``PostgresStore.write_batch`` (the consumer's path: chain hashing,
dedup, projection) with big batches — 200 attempt bundles (1,000 events) per call, and
bootstrap bursts of 1,000 events per call for the rest — into a fresh database
``leviathan_bench_query`` (kept between runs when it already holds the requested data;
``--fresh`` drops it; ``--scratch`` seeds a database of the run's own and drops it after,
as the test suite's quick run does). Then p50/p99 of ``/v1/graph/summary``,
``/v1/attempts?limit=50``, ``/v1/attempts/{id}`` (random ids) and
``/v1/events?limit=100&after=<random cursor>`` are printed, followed by EXPLAIN (ANALYZE,
BUFFERS) of the SQL those endpoints run (the same statements as storage/postgres/read.py
and storage/postgres/store.py, repeated here to be explained).

``--topology`` measures the topology endpoints instead, at each of ``--sizes`` on
``--backend`` (see :mod:`bench.query_topology`); ``--load`` measures every read endpoint
with ``--readers`` concurrent clients while a writer process commits, at each of
``--sizes`` on ``--backend`` (see :mod:`bench.query_load`).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from bench import query_load, query_topology
from bench.scratchdb import scratch_database
from bench.seeding import fill_with_bursts, write_grouped
from query.app import mount
from query.deps import QueryDeps
from storage.base import EventStore
from storage.config import StorageSettings, create_store
from storage.postgres import read as pg_read
from storage.projection import ATTEMPT
from storage.queue import StreamLayout
from storage.readside import encode_event_cursor
from tests.factories import attempt_lifecycle
from webcore.store_ctx import store_ctx

DB = "leviathan_bench_query"
LAYOUT = StreamLayout(partitions=8)
EVENT_COLS = (
    "gid, event_id, event_type, ts_text, actor_id, payload, bundle_id, target, received_at, "
    "partition, seq, prev_hash, hash"
)


def dsn(base: str, db: str) -> str:
    return base.rsplit("/", 1)[0] + "/" + db


async def prepare_db(admin_dsn: str, db: str, fresh: bool) -> None:
    con = await asyncpg.connect(admin_dsn)
    try:
        if fresh:
            await con.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        if not await con.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db):
            await con.execute(f'CREATE DATABASE "{db}"')
    finally:
        await con.close()


async def seed(store: EventStore, events: int, attempts: int) -> None:
    start = time.perf_counter()
    raws = (
        attempt_lifecycle(f"att-{i:06d}", f"task-{i % 5000}", target=f"repo-{i % 20}", start=i)
        for i in range(attempts)
    )
    written = await write_grouped(store, LAYOUT, raws)
    written = await fill_with_bursts(
        store, LAYOUT, written, events, start, exact=False, report_every=100
    )
    took = time.perf_counter() - start
    print(f"seeded {written:,} events via write_batch in {took:.1f}s ({written / took:,.0f}/s)")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(
    http: aiohttp.ClientSession, base: str, paths: list[str]
) -> tuple[float, float, float]:
    samples = []
    for path in paths:
        t0 = time.perf_counter()
        async with http.get(base + path) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{path}: {resp.status}")
        samples.append((time.perf_counter() - t0) * 1000)
    return pct(samples, 0.5), pct(samples, 0.99), statistics.fmean(samples)


async def serve_and_time(settings: StorageSettings, cases: dict[str, list[str]]) -> None:
    """p50/p99/mean of each case's paths against a query app over ``settings``."""
    app = web.Application()

    mount(app, QueryDeps(layout=LAYOUT, redis=lambda: None))  # type: ignore[arg-type,return-value]
    app.cleanup_ctx.append(store_ctx(settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    n = len(next(iter(cases.values())))
    try:
        async with aiohttp.ClientSession() as http:
            await timed(http, base, [p[0] for p in cases.values()])  # warm pool and caches
            print(f"{'endpoint':32} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}  (n={n})")
            for name, paths in cases.items():
                p50, p99, mean = await timed(http, base, paths)
                print(f"{name:32} {p50:8.2f} {p99:8.2f} {mean:8.2f}")
    finally:
        await runner.cleanup()


async def measure(
    settings: StorageSettings, n: int, attempt_ids: list[str], heads: dict[int, int]
) -> None:
    rng = random.Random(5)
    cases = {
        "/v1/graph/summary": ["/v1/graph/summary"] * n,
        "/v1/attempts?limit=50": ["/v1/attempts?limit=50"] * n,
        "/v1/attempts/{id}": [f"/v1/attempts/{rng.choice(attempt_ids)}" for _ in range(n)],
        "/v1/events?limit=100&after=": [
            "/v1/events?limit=100&after="
            + encode_event_cursor({p: rng.randrange(seq) for p, seq in heads.items()})
            for _ in range(n)
        ],
    }
    await serve_and_time(settings, cases)


async def explain(db_dsn: str, attempt_id: str, gid: int) -> None:
    statements: list[tuple[str, str, list[Any]]] = [
        ("graph summary: counts",
         "SELECT kind, type, sum(n)::bigint AS n FROM graph_counts GROUP BY kind, type", []),
        ("graph summary: recent",
         f"SELECT {EVENT_COLS} FROM events ORDER BY gid DESC LIMIT $1", [20]),
        ("attempts page",
         "SELECT id, vals, nid FROM nodes WHERE type = $1 ORDER BY nid DESC LIMIT 51",
         [ATTEMPT]),
        ("attempt: node", "SELECT vals FROM nodes WHERE type = $1 AND id = $2",
         [ATTEMPT, attempt_id]),
        ("attempt: events",
         f"SELECT {EVENT_COLS} FROM events WHERE attempt_id = $1 ORDER BY gid", [attempt_id]),
        ("attempt: artifacts",
         "SELECT artifact_id, sha256, kind, uri, size, bundle_id FROM artifacts "
         "WHERE attempt_id = $1 ORDER BY rid", [attempt_id]),
        ("events page (positions at the middle of every partition)",
         pg_read.EVENTS_PAGE.format(filters="", cols=EVENT_COLS),
         [list(range(LAYOUT.partitions)), [gid // LAYOUT.partitions] * LAYOUT.partitions, 100]),
    ]  # fmt: skip
    con = await asyncpg.connect(db_dsn)
    try:
        for title, sql, args in statements:
            plan = await con.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *args)
            print(f"\n-- {title}")
            for row in plan:
                print("   " + row[0])
    finally:
        await con.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--attempts", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--fresh", action="store_true", help="drop and re-seed the database")
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default=DB, help="the seeded database (kept between runs)")
    parser.add_argument(
        "--scratch", action="store_true", help="seed a database of this run's own, dropped after"
    )
    parser.add_argument("--topology", action="store_true", help="time the topology endpoints")
    parser.add_argument("--backend", choices=["ndjson", "postgres"], default="ndjson")
    parser.add_argument("--sizes", default="1000,1000000", help="log sizes (--topology, --load)")
    parser.add_argument("--load", action="store_true", help="concurrent readers while writing")
    parser.add_argument("--readers", type=int, default=16, help="concurrent clients (--load)")
    parser.add_argument("--servers", type=int, default=2, help="query app processes (--load)")
    parser.add_argument(
        "--write-interval", type=float, default=0.05, help="seconds between batches (--load)"
    )
    args = parser.parse_args()
    if args.topology:
        await query_topology.run(args, serve_and_time)
        return
    if args.load:
        await query_load.run(args)
        return

    if args.scratch:
        async with scratch_database(args.admin_dsn, "query") as db_dsn:
            await single_reader(args, db_dsn)
        return
    await prepare_db(args.admin_dsn, args.database, args.fresh)
    await single_reader(args, dsn(args.admin_dsn, args.database))


async def single_reader(args: argparse.Namespace, db_dsn: str) -> None:
    settings = StorageSettings(
        backend="postgres", postgres_dsn=db_dsn, partitions=LAYOUT.partitions
    )
    store = create_store(settings)
    await store.open()
    try:
        have = await store.count_events()
        if have < args.events:
            if have:
                name = db_dsn.rsplit("/", 1)[-1]
                raise SystemExit(f"{name} holds {have:,} events; re-run with --fresh")
            await seed(store, args.events, args.attempts)
        print(f"store holds {await store.count_events():,} events")
    finally:
        await store.close()
    con = await asyncpg.connect(db_dsn)
    try:
        sample = "SELECT id FROM nodes WHERE type = $1 ORDER BY random() LIMIT 1000"
        ids = [r[0] for r in await con.fetch(sample, ATTEMPT)]
        max_gid = int(await con.fetchval("SELECT max(gid) FROM events"))
        heads = {r[0]: r[1] for r in await con.fetch("SELECT partition, seq FROM heads")}
        await con.execute("ANALYZE")
    finally:
        await con.close()
    await measure(settings, args.requests, ids, heads)
    await explain(db_dsn, ids[0], max_gid // 2)


if __name__ == "__main__":
    asyncio.run(main())
