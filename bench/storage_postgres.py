"""Write rate of the PostgreSQL backend vs raw COPY of the same rows (DESIGN §4).

Pipeline position: measures :meth:`storage.postgres.PostgresStore.write_batch`, the
consumer's per-batch write, in isolation (no Redis). Run ``python -m bench.storage_postgres
[--events N] [--rounds R] [--admin-dsn DSN]``: each round, in a fresh scratch database, it
times (1) one raw asyncpg ``copy_records_to_table`` of N event rows (same columns, codecs
and indexes as ``events``) and right after it (2) write_batch of the same events in
500-event batches of 20-event bundles (dedup, chain, COPY, graph merge). It prints both
rates and their ratio per round and the median ratio: on a shared machine a single timing
of either side swings by half, so each ratio pairs two adjacent measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from storage.chain import GENESIS_HASH
from storage.envelope import Envelope
from storage.pg_migrations import migrate
from storage.pg_write import STAGE_COLUMNS, plan
from storage.postgres import PostgresStore, _init_connection
from storage.schema import Bundle, WireEvent

BASE = 1_764_320_000.0
BUNDLE = 20
BATCH = 500


def bundle(n: int) -> Envelope:
    """One worker bundle: 20 events of one attempt (graph work like real traffic)."""
    attempt, task = f"att-{n}", f"task-{n % 200}"
    events = [
        WireEvent.model_validate(
            {
                "event_id": f"e-{n}-{i}",
                "event_type": "attempt.started" if i == 0 else "file.discovered",
                "timestamp": f"2026-11-28T09:{i:02d}:00Z",
                "payload": {"attempt_id": attempt, "task_id": task, "path": f"src/m{i}.py"},
            }
        )
        for i in range(BUNDLE)
    ]
    b = Bundle(target="bench", bundle_id=f"b-{n}", events=events)
    return Envelope(bundle=b, received_at=BASE + n, token_label="bench", entry_id=f"{n}-0")


async def raw_copy(dsn: str, envelopes: list[Envelope]) -> float:
    rows = plan(0, envelopes, {}, 0, GENESIS_HASH).rows
    con = await asyncpg.connect(dsn)
    await _init_connection(con)  # the store's codecs: same encoding work on both sides
    try:
        await con.execute("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
        started = time.perf_counter()
        await con.copy_records_to_table("raw_events", records=rows, columns=STAGE_COLUMNS)
        return len(rows) / (time.perf_counter() - started)
    finally:
        await con.close()


async def store_writes(dsn: str, envelopes: list[Envelope]) -> float:
    store = PostgresStore(dsn, min_size=1, max_size=2)
    await store.open()
    per_batch = BATCH // BUNDLE
    try:
        started = time.perf_counter()
        for i in range(0, len(envelopes), per_batch):
            await store.write_batch(1, envelopes[i : i + per_batch])
        elapsed = time.perf_counter() - started
        return await store.count_events() / elapsed
    finally:
        await store.close()


async def one_round(admin: asyncpg.Connection, admin_dsn: str, events: int) -> tuple[float, float]:
    name = f"lvt_bench_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(admin_dsn)
    dsn = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        envelopes = [bundle(n) for n in range(events // BUNDLE)]
        await migrate(dsn)
        copy_rate = await raw_copy(dsn, envelopes)
        write_rate = await store_writes(dsn, envelopes)
        return copy_rate, write_rate
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main(admin_dsn: str, events: int, rounds: int) -> None:
    admin = await asyncpg.connect(admin_dsn)
    results = []
    try:
        print(f"events: {events} per round ({BATCH}-event batches of {BUNDLE}-event bundles)")
        for r in range(1, rounds + 1):
            copy_rate, write_rate = await one_round(admin, admin_dsn, events)
            results.append((copy_rate, write_rate))
            print(
                f"round {r}: raw COPY {copy_rate:8.0f} rows/s  write_batch {write_rate:8.0f} "
                f"events/s  ratio {write_rate / copy_rate:6.1%}"
            )
    finally:
        await admin.close()
    ratios = sorted(w / c for c, w in results)
    print(f"raw COPY:     {statistics.median(c for c, _ in results):10.0f} rows/s (median)")
    print(f"write_batch:  {statistics.median(w for _, w in results):10.0f} events/s (median)")
    print(f"ratio:        {statistics.median(ratios):10.1%} of raw COPY, median of rounds "
          f"(min {ratios[0]:.1%}, max {ratios[-1]:.1%}; target >= 50%)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    asyncio.run(main(args.admin_dsn, args.events, args.rounds))
