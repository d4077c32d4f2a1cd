"""Write rate of the PostgreSQL backend vs raw COPY of the same rows.

Pipeline position: measures :meth:`storage.postgres.store.PostgresStore.write_batch`, the
consumer's per-batch write, in isolation (no Redis). Run ``python -m bench.storage_postgres
[--events N] [--rounds R] [--slices S] [--admin-dsn DSN]``: each round, in a fresh scratch
database, it times (1) raw asyncpg ``copy_records_to_table`` of N event rows (same columns,
codecs and indexes as ``events``; one COPY per slice of N/S rows) and (2) write_batch of the
same events in 500-event batches of 20-event bundles (dedup, chain, COPY, graph merge),
alternating the two every slice. It prints both rates and their ratio per round and the
median ratio: on a shared machine one timing of either side swings by half (raw COPYs of
the same 20,000 rows measured back to back: 42k-75k rows/s), so each ratio pairs
measurements interleaved within the same seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import asyncpg

from bench import scratchdb
from storage.chain import GENESIS_HASH
from storage.envelope import Envelope
from storage.postgres.codecs import init_connection
from storage.postgres.migrate import migrate
from storage.postgres.store import PostgresStore
from storage.postgres.write import COPY_COLUMNS, Planner, prepare
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


async def one_round(admin_dsn: str, events: int, slices: int) -> tuple[float, float]:
    """Raw COPY and write_batch of the same events, slice by slice, in a fresh database.

    The two sides alternate every slice (and which goes first alternates too), so a change
    of the host's speed during the round weighs on both alike; each side's rate is its
    events over the sum of its own slices' times.
    """
    dsn = await scratchdb.create(admin_dsn, "storage")
    try:
        envelopes = [bundle(n) for n in range(events // BUNDLE)]
        await migrate(dsn)
        # the whole batch planned at once (write_batch interleaves planning with the COPY)
        planner = Planner(0, {}, 0, GENESIS_HASH)
        planner.run(prepare(envelopes))
        rows = planner.out.rows  # rows as write_batch makes them
        con = await asyncpg.connect(dsn)
        await init_connection(con)  # the store's codecs: same encoding work on both sides
        await con.execute("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
        store = PostgresStore(dsn, min_size=1, max_size=2)
        await store.open()
        per_batch, per_slice = BATCH // BUNDLE, -(-len(envelopes) // slices)
        copy_s = write_s = 0.0
        try:
            for k, start in enumerate(range(0, len(envelopes), per_slice)):
                part = envelopes[start : start + per_slice]
                first = start * BUNDLE
                sides = ["copy", "write"] if k % 2 == 0 else ["write", "copy"]
                for side in sides:
                    began = time.perf_counter()
                    if side == "copy":
                        await con.copy_records_to_table(
                            "raw_events",
                            records=rows[first : first + len(part) * BUNDLE],
                            columns=COPY_COLUMNS,
                        )
                        copy_s += time.perf_counter() - began
                    else:
                        for i in range(0, len(part), per_batch):
                            await store.write_batch(1, part[i : i + per_batch])
                        write_s += time.perf_counter() - began
            written = await store.count_events()
        finally:
            await store.close()
            await con.close()
        return len(rows) / copy_s, written / write_s
    finally:
        await scratchdb.drop(admin_dsn, dsn)


async def main(admin_dsn: str, events: int, rounds: int, slices: int) -> None:
    results = []
    print(f"events: {events} per round ({BATCH}-event batches of {BUNDLE}-event bundles)")
    for r in range(1, rounds + 1):
        copy_rate, write_rate = await one_round(admin_dsn, events, slices)
        results.append((copy_rate, write_rate))
        print(
            f"round {r}: raw COPY {copy_rate:8.0f} rows/s  write_batch {write_rate:8.0f} "
            f"events/s  ratio {write_rate / copy_rate:6.1%}"
        )
    ratios = sorted(w / c for c, w in results)
    print(f"raw COPY:     {statistics.median(c for c, _ in results):10.0f} rows/s (median)")
    print(f"write_batch:  {statistics.median(w for _, w in results):10.0f} events/s (median)")
    print(f"ratio:        {statistics.median(ratios):10.1%} of raw COPY, median of rounds "
          f"(min {ratios[0]:.1%}, max {ratios[-1]:.1%}; target >= 50%)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=4, help="alternations per round")
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    asyncio.run(main(args.admin_dsn, args.events, args.rounds, args.slices))
