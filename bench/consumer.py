"""Consumer drain rate: one consumer emptying a pre-filled stream into each backend.

Pipeline position: measures the consumer tier (XREADGROUP → write_batch → XACK/announce),
i.e. :class:`consumer.reader.Reader` exactly as the process runs it, without ingest. Run
``python -m bench.consumer [--bundles N] [--batch B]``: it XADDs N 20-event bundles through
the envelope encoder (pipelined, as ingest's group commit), times one consumer draining
them into (a) PostgreSQL in a fresh database and (b) NDJSON in a temp dir, ``--rounds``
times (3) with the backends alternating, and prints each round's events/s and the median
per backend. Uses its own stream prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import consumer_e2e
from bench.scratchdb import scratch_database
from bench.streams import EVENTS_PER_BUNDLE, backlog, prefill
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader
from consumer.settings import ConsumerSettings
from consumer.worker import tune_gc
from storage.config import create_store

TARGETS = {"postgres": 30_000, "ndjson": 50_000}


async def drain(settings: ConsumerSettings, bundles: int) -> float:
    """Seconds for one consumer to write and ack ``bundles`` pre-filled bundles."""
    redis = settings.stream_redis()  # one node or the cluster, as the consumer's
    store = create_store(settings, writer=True)  # as the consumer process makes it
    layout = settings.layout
    try:
        await prefill(redis, layout, bundles, uuid.uuid4().hex[:6])
        await store.open()
        reader = Reader(redis, store, settings, ConsumerMetrics())
        tune_gc()  # as the consumer process does once it is set up
        started = time.perf_counter()
        task = asyncio.create_task(reader.run())
        while True:  # poll: the reader has no "drained" signal, the group's backlog is it
            if not await backlog(redis, layout):
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        reader.stop()
        await task
        stored = await store.count_events()
        if stored != bundles * EVENTS_PER_BUNDLE:
            raise SystemExit(f"stored {stored} events, expected {bundles * EVENTS_PER_BUNDLE}")
        return elapsed
    finally:
        await store.close()
        keys = [*layout.streams(), *layout.dead_streams(), layout.committed_channel]
        await redis.delete(*keys)
        async for key in redis.scan_iter(match=f"{layout.prefix}:done:*", count=5000):
            await redis.delete(key)
        await redis.aclose()


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench:consumer:{uuid.uuid4().hex[:8]}"
    common: dict[str, Any] = {
        "redis_url": args.redis_url,
        "stream_prefix": prefix,
        "partitions": args.partitions,
        "batch": args.batch,
        "block_ms": 20,
        "consumer_name": "bench",
        "health_port": 0,
    }
    total = args.bundles * EVENTS_PER_BUNDLE
    print(
        f"{args.bundles} bundles x {EVENTS_PER_BUNDLE} events = {total} events, "
        f"{args.partitions} partitions, batch {args.batch}"
    )
    rates: dict[str, list[float]] = {"postgres": [], "ndjson": []}
    for round_ in range(1, args.rounds + 1):
        # backends alternate round by round: a shared host's slow spell hits both alike
        if not args.skip_postgres:
            async with scratch_database(args.postgres_admin, "consumer") as dsn:
                settings = ConsumerSettings(backend="postgres", postgres_dsn=dsn, **common)
                seconds = await drain(settings, args.bundles)
            rates["postgres"].append(total / seconds)
            print(f"round {round_} postgres: {seconds:.2f}s  {total / seconds:,.0f} events/s")
        if not args.skip_ndjson:
            with tempfile.TemporaryDirectory() as tmp:
                settings = ConsumerSettings(backend="ndjson", ndjson_dir=Path(tmp), **common)
                seconds = await drain(settings, args.bundles)
            rates["ndjson"].append(total / seconds)
            print(f"round {round_} ndjson:   {seconds:.2f}s  {total / seconds:,.0f} events/s")
    for name, values in rates.items():
        if values:
            print(
                f"{name + ':':9} median {statistics.median(values):,.0f} events/s over "
                f"{len(values)} round(s), best {max(values):,.0f}  (target >= {TARGETS[name]:,})"
            )


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundles", type=int, default=5000)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument(
        "--rounds", type=int, default=3, help="drains per backend; the median is reported"
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("LEVIATHAN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/4"),
    )
    p.add_argument(
        "--postgres-admin",
        default=os.environ.get(
            "LEVIATHAN_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    p.add_argument("--skip-postgres", action="store_true")
    p.add_argument("--skip-ndjson", action="store_true")
    p.add_argument("--e2e", action="store_true", help="also ingest→commit latency (processes)")
    args = p.parse_args()
    for name in ("bundles", "batch", "partitions", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    asyncio.run(main(args))
    if args.e2e:
        asyncio.run(consumer_e2e.run(args.redis_url))


if __name__ == "__main__":
    cli()
