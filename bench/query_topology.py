"""Topology read latency at two log sizes: the answer must not grow with the event log.

Pipeline position: the ingest tier's topology endpoints end to end (real aiohttp query app
over HTTP on localhost, the store's topology index) on either backend. Run through
``python -m bench.query --topology [--backend ndjson|postgres] [--sizes 1000,1000000]``.

For each size the store is seeded from scratch through ``write_batch`` (the consumer's
path): 50 targets x 2 topology runs (1,000 events, the same at every size) plus bootstrap
bursts of 1,000 ``file.discovered`` events up to the size. Then p50/p99/mean of
``/v1/topology/summary|areas|subsystems|dependencies?target=<random>`` are printed, and
the plan of each index query (SQLite's EXPLAIN QUERY PLAN, PostgreSQL's EXPLAIN ANALYZE).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.scratchdb import scratch_database
from bench.seeding import fill_with_bursts
from storage.base import EventStore
from storage.config import StorageSettings, create_store
from storage.ndjson import read as ndjson_read
from storage.postgres import topology as pg_topology
from storage.queue import StreamLayout
from tests.factories import envelope, topology_run

LAYOUT = StreamLayout(partitions=8)
TARGETS = 50


async def seed(store: EventStore, events: int) -> int:
    start, written, n = time.perf_counter(), 0, 0
    for run, at in enumerate((0, 86400)):
        for t in range(TARGETS):
            raw = topology_run(f"repo-{t}", f"{run:02d}{t:08d}", at=at)
            n += 1
            part = LAYOUT.partition_of(raw["bundle_id"])
            written += (await store.write_batch(part, [envelope(raw, entry_id=f"{n}-0")])).written
    written = await fill_with_bursts(store, LAYOUT, written, events, start)
    print(f"seeded {written:,} events in {time.perf_counter() - start:.1f}s")
    return written


def paths(n: int) -> dict[str, list[str]]:
    rng = random.Random(11)
    out = {}
    for name in ("summary", "areas", "subsystems", "dependencies"):
        out[f"/v1/topology/{name}"] = [
            f"/v1/topology/{name}?target=repo-{rng.randrange(TARGETS)}" for _ in range(n)
        ]
    return out


def explain_sqlite(directory: Path) -> None:
    con = sqlite3.connect(directory / "index.sqlite3")
    try:
        for sql, args in (
            (ndjson_read.TOPOLOGY_SUMMARY_SQL, ("repo-7", "summary")),
            (ndjson_read.TOPOLOGY_COUNTS_SQL, ("repo-7",)),
            (ndjson_read.TOPOLOGY_ITEMS_SQL, ("repo-7", "area", "", 1001)),
        ):
            plan = " | ".join(r[3] for r in con.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            print(f"   {plan}")
    finally:
        con.close()


async def explain_postgres(db_dsn: str) -> None:
    con = await asyncpg.connect(db_dsn)
    try:
        await con.execute("ANALYZE")
        for sql, args in (
            (pg_topology.SUMMARY_SQL, ("repo-7", "summary")),
            (pg_topology.COUNTS_SQL, ("repo-7",)),
            (pg_topology.ITEMS_SQL, ("repo-7", "area", "", 1001)),
        ):
            rows = await con.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}", *args)
            print("   " + " | ".join(r[0].strip() for r in rows))
    finally:
        await con.close()


async def one_size(args: argparse.Namespace, size: int, measure: Any) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-topology-"))
    try:
        if args.backend == "postgres":  # a million rows on a shared server: not kept
            async with scratch_database(args.admin_dsn, "topology") as db_dsn:
                settings = StorageSettings(backend="postgres", postgres_dsn=db_dsn, partitions=8)
                await measure_size(settings, size, measure, args.requests)
                await explain_postgres(db_dsn)
        else:
            settings = StorageSettings(backend="ndjson", ndjson_dir=tmp / "log", partitions=8)
            await measure_size(settings, size, measure, args.requests)
            explain_sqlite(tmp / "log")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def measure_size(settings: StorageSettings, size: int, measure: Any, requests: int) -> None:
    store = create_store(settings)
    await store.open()
    try:
        total = await seed(store, size)
    finally:
        await store.close()
    print(f"\n== {settings.backend}, {total:,} events in the log")
    await measure(settings, paths(requests))


async def run(args: argparse.Namespace, measure: Any) -> None:
    for size in (int(s) for s in args.sizes.split(",")):
        await one_size(args, size, measure)
