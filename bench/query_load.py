"""Query latency under load: 16 concurrent readers while a writer keeps committing batches.

Pipeline position: the ingest tier's read side end to end: the real aiohttp query app in
``--servers`` processes sharing one port (as ingest replicas share a service), serving
HTTP on localhost over either backend, while another process writes through
``write_batch`` (the consumer's path) the whole time. Run through
``python -m bench.query --load [--backend ndjson|postgres] [--sizes 10000,1000000]``.

For each size the store is seeded from scratch: attempt lifecycles (up to ``--attempts``,
at most a tenth of the size, each with its task's ``task.created``) over 20 targets,
then bootstrap bursts of ``file.discovered`` events up to the size; a PostgreSQL store is
then vacuumed and read into the OS cache (:func:`settle`), an NDJSON store's files are read
into it (:func:`warm_files`). Then ``--readers``
clients issue ``--requests`` requests each, round robin over every read endpoint (random
attempts, tasks, targets and cursors), while the writer commits a 20-bundle batch of new
attempts every ``--write-interval`` seconds; p50/p99/mean per endpoint are printed, with
what the writer committed meanwhile. Targets: p99 <= 50 ms for every endpoint, and the
p99 at the largest size within 2x of the smallest.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from bench.machine import cpu_seconds, cpu_seconds_named
from bench.scratchdb import scratch_database
from bench.seeding import fill_with_bursts, write_grouped
from leviathan_cp.ports import free_port
from query.app import mount
from query.deps import QueryDeps
from storage.base import EventStore
from storage.config import StorageSettings, create_store
from storage.queue import StreamLayout
from storage.readside import encode_cursor, encode_event_cursor
from tests.factories import attempt_lifecycle, envelope, event
from webcore.serve import tune_gc
from webcore.store_ctx import store_ctx

LAYOUT = StreamLayout(partitions=8)
TARGETS = 20

Draw = Callable[[random.Random], str]  # a random path (or cursor) of one kind


def attempts_for(size: int, most: int) -> int:
    return max(10, min(most, size // 10))


async def seed(store: EventStore, events: int, attempts: int) -> int:
    start = time.perf_counter()
    tasks = max(1, attempts // 5)

    def raws() -> Iterator[dict[str, Any]]:
        for i in range(attempts):
            task, target = f"task-{i % tasks}", f"repo-{i % TARGETS}"
            raw = attempt_lifecycle(f"att-{i:06d}", task, target=target, start=i,
                                    outcome="failed" if i % 10 == 0 else "succeeded")  # fmt: skip
            raw["events"].append(event("task.created", {"task_id": task, "target_id": target}))
            yield raw

    written = await write_grouped(store, LAYOUT, raws())
    written = await fill_with_bursts(store, LAYOUT, written, events, start)
    print(f"seeded {written:,} events in {time.perf_counter() - start:.1f}s", flush=True)
    return written


# -- the two other processes -------------------------------------------------------


def _serve(settings: StorageSettings, port: Any, stop: EventType) -> None:
    async def run() -> None:
        app = web.Application()

        mount(app, QueryDeps(layout=LAYOUT, redis=lambda: None))  # type: ignore[arg-type,return-value]
        app.cleanup_ctx.append(store_ctx(settings))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port.value, reuse_port=True)
        await site.start()
        tune_gc()  # as the serving tiers do once started
        await asyncio.to_thread(stop.wait)
        await runner.cleanup()

    asyncio.run(run())


def _write(settings: StorageSettings, interval: float, stop: EventType, done: Any) -> None:
    async def run() -> None:
        store = create_store(settings)
        await store.open()
        n = 0
        try:
            while not stop.is_set():
                envs = []
                for _ in range(20):
                    n += 1
                    raw = attempt_lifecycle(f"live-{n:07d}", f"live-task-{n % 50}",
                                            target=f"repo-{n % TARGETS}", start=n)  # fmt: skip
                    envs.append(envelope(raw, entry_id=f"{n}-1"))
                part = n % LAYOUT.partitions
                done.value += (await store.write_batch(part, envs)).written
                await asyncio.sleep(interval)
        finally:
            await store.close()

    asyncio.run(run())


# -- the readers ---------------------------------------------------------------------


async def settle(dsn: str) -> None:
    """Bring the freshly seeded database to the state a live one of its size is in.

    VACUUM (ANALYZE) does what autovacuum does after a bulk load (on a server that runs it,
    it would otherwise start in the middle of the measurement; on one that does not, the
    readers would walk the seed's dead row versions). The tables and indexes are then read
    into the operating system's cache (pg_prewarm): a store that has been serving has its
    working set in memory, and a read that waits for the disk measures the disk.
    """
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("VACUUM (ANALYZE)")
        try:
            await con.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        except asyncpg.PostgresError as exc:
            print(f"not warmed (pg_prewarm: {exc}); the first reads go to the disk")
            return
        blocks = await con.fetchval(
            "SELECT sum(pg_prewarm(c.oid, 'read')) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i')"
        )
        size = await con.fetchval("SELECT current_setting('block_size')::bigint")
        print(f"vacuumed; {int(blocks or 0) * size / 2**20:,.0f} MiB of tables and indexes "
              "read into the OS cache", flush=True)  # fmt: skip
    finally:
        await con.close()


def warm_files(directory: Path) -> None:
    """Read an NDJSON store's files (logs and index) once, into the OS cache, as
    :func:`settle` does for PostgreSQL: a store that has been serving has them there."""
    total = 0
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    print(f"{total / 2**20:,.0f} MiB of log and index files read into the OS cache", flush=True)


async def _positions(settings: StorageSettings, store: EventStore) -> Draw:
    """A random ``/v1/events`` cursor of the backend's kind."""
    if settings.backend == "postgres":
        assert settings.postgres_dsn is not None
        con = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
        try:
            heads = {r[0]: r[1] for r in await con.fetch("SELECT partition, seq FROM heads")}
        finally:
            await con.close()
        return lambda rng: encode_event_cursor({p: rng.randrange(s) for p, s in heads.items()})
    total = await store.count_events()
    return lambda rng: encode_cursor([rng.randrange(total)])


def endpoints(attempts: int, cursor: Draw) -> dict[str, Draw]:
    tasks = max(1, attempts // 5)

    def attempt(rng: random.Random) -> str:
        return f"/v1/attempts/att-{rng.randrange(attempts):06d}"

    def target(rng: random.Random) -> str:
        return f"repo-{rng.randrange(TARGETS)}"

    return {
        "/v1/graph/summary": lambda rng: "/v1/graph/summary",
        "/v1/attempts?limit=50": lambda rng: "/v1/attempts?limit=50&include=error",
        "/v1/attempts?target=": lambda rng: f"/v1/attempts?limit=50&target={target(rng)}",
        "/v1/attempts?status=failed": lambda rng: "/v1/attempts?limit=50&status=failed",
        "/v1/attempts/{id}": attempt,
        "/v1/failures?limit=100": lambda rng: "/v1/failures?limit=100",
        "/v1/events/recent": lambda rng: "/v1/events/recent?limit=200",
        "/v1/events?after=": lambda rng: f"/v1/events?limit=100&after={cursor(rng)}",
        "/v1/events?target=": lambda rng: f"/v1/events?limit=100&target={target(rng)}",
        "/v1/events?attempt_id=": lambda rng: "/v1/events?attempt_id=" + attempt(rng)[13:],
        "/v1/tasks?limit=100": lambda rng: "/v1/tasks?limit=100",
        "/v1/tasks/{id}": lambda rng: f"/v1/tasks/task-{rng.randrange(tasks)}",
    }  # fmt: skip


async def read_load(
    base: str, cases: dict[str, Draw], readers: int, requests: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = defaultdict(list)
    names = list(cases)

    async def reader(k: int, http: aiohttp.ClientSession, requests: int = requests) -> None:
        rng = random.Random(k)
        for i in range(requests):
            name = names[(k + i) % len(names)]
            t0 = time.perf_counter()
            async with http.get(base + cases[name](rng)) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{name}: {resp.status}")
            samples[name].append((time.perf_counter() - t0) * 1000)

    connector = aiohttp.TCPConnector(limit=readers)
    headers = {"Authorization": "Bearer bench"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        # warm up as the load runs: every reader once through every endpoint, so each
        # server's pooled connections have prepared their statements (a first Parse on a
        # fresh connection is a start-up cost, not a read's)
        await asyncio.gather(*(reader(-1 - k, http, len(names)) for k in range(readers)))
        samples.clear()
        await asyncio.gather(*(reader(k, http) for k in range(readers)))
    return samples


def _cpu(servers: list[Any], writer: Any) -> dict[str, float]:
    """CPU seconds used so far by the server processes, the writer and this client."""
    return {
        "servers": sum(cpu_seconds(p.pid) for p in servers),
        "writer": cpu_seconds(writer.pid),
        "client": cpu_seconds(os.getpid()),
        "postgres": cpu_seconds_named("postgres"),  # 0 on NDJSON (a quiet server's own)
    }


async def _answers(base: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(base + "/v1/graph/summary") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_size(args: argparse.Namespace, size: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lvt-query-load-"))
    try:
        if args.backend == "ndjson":
            await measure_size(
                args, size, StorageSettings(backend="ndjson", ndjson_dir=tmp / "log")
            )
        else:  # a million rows on a shared server: a database of this run's, not kept
            async with scratch_database(args.admin_dsn, "query_load") as dsn:
                settings = StorageSettings(
                    backend="postgres", postgres_dsn=dsn, partitions=LAYOUT.partitions
                )
                await measure_size(args, size, settings)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def measure_size(args: argparse.Namespace, size: int, settings: StorageSettings) -> None:
    store = create_store(settings)
    await store.open()
    attempts = attempts_for(size, args.attempts)
    try:
        written = await seed(store, size, attempts)
        cursor = await _positions(settings, store)
    finally:
        await store.close()
    if settings.backend == "postgres":
        assert settings.postgres_dsn is not None
        await settle(settings.postgres_dsn.get_secret_value())
    else:
        assert settings.ndjson_dir is not None
        warm_files(settings.ndjson_dir)
    ctx = multiprocessing.get_context("spawn")
    stop, port, done = ctx.Event(), ctx.Value("i", free_port()), ctx.Value("q", 0)
    servers = [ctx.Process(target=_serve, args=(settings, port, stop))
               for _ in range(args.servers)]  # fmt: skip
    writer = ctx.Process(target=_write, args=(settings, args.write_interval, stop, done))
    for proc in (*servers, writer):
        proc.start()
    try:
        for _ in range(1200):  # the servers answer and the writer has committed
            if done.value and await _answers(f"http://127.0.0.1:{port.value}"):
                break
            await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        cpu0 = _cpu(servers, writer)
        samples = await read_load(
            f"http://127.0.0.1:{port.value}", endpoints(attempts, cursor),
            args.readers, args.requests,
        )  # fmt: skip
        took = time.perf_counter() - t0
        cpu = {n: v - cpu0[n] for n, v in _cpu(servers, writer).items()}
    finally:
        stop.set()
        for proc in (*servers, writer):
            proc.join(60)
            if proc.is_alive():
                proc.kill()
    print(f"\n== {settings.backend}, {written:,} events in the log")
    print(f"{attempts:,} attempts; {args.readers} readers, {args.servers} server "
          f"process(es); the writer committed "
          f"{done.value:,} events during the {took:.1f}s of reads")  # fmt: skip
    n = sum(len(v) for v in samples.values())
    # where the machine's time went: queueing behind CPU is what p99 measures here
    print(f"CPU per request: servers {cpu['servers'] / n * 1e3:.2f} ms, PostgreSQL "
          f"{cpu['postgres'] / n * 1e3:.2f} ms, writer {cpu['writer'] / n * 1e3:.2f} ms, "
          f"this client {cpu['client'] / n * 1e3:.2f} ms; "
          f"{sum(cpu.values()) / took:.2f} of {os.cpu_count()} cores busy")  # fmt: skip
    print(f"{'endpoint':32} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}  (n={n})")
    for name, values in samples.items():
        print(f"{name:32} {pct(values, 0.5):8.2f} {pct(values, 0.99):8.2f} "
              f"{statistics.fmean(values):8.2f}")  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    for size in (int(s) for s in args.sizes.split(",")):
        await one_size(args, size)
