"""Export and import rates (events/s, peak RSS) on both backends, and the drain during retention.

Pipeline position: measures the ``leviathan-cp export`` / ``import`` commands as an operator
runs them (each in its own process, so its peak RSS is its own, read with ``wait4``), over a
synthetic export of N events (20-event worker bundles over 8 partitions). Run
``python -m bench.lifecycle [--events N] [--backend ndjson|postgres|both]
[--admin-dsn DSN]``; PostgreSQL runs in a scratch ``lvt_lifecycle_*`` database it drops after.

Per backend: import the file into an empty store, export it back (both must count N
events), then the retention phase: a writer appends 500-event batches (the consumer's
``write_batch``) in windows of ``--window`` seconds, alternately alone and while ``retain``
removes the imported events (which arrived long ago) in batches of 5,000; the drop is
``1 - rate while retaining / rate alone`` over the median windows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from bench import scratchdb
from storage.base import EventStore
from storage.config import StorageSettings, create_store
from storage.envelope import Envelope
from storage.schema import Bundle, WireEvent

BUNDLE = 20
PARTITIONS = 8
OLD = 1_700_000_000.0


def export_lines(events: int) -> Iterator[bytes]:
    """Lines as ``leviathan-cp export`` writes them (the chain fields are the importer's
    business: it links its own)."""
    for n in range(events // BUNDLE):
        for i in range(BUNDLE):
            yield orjson.dumps(
                {
                    "event_id": f"e-{n}-{i}",
                    "event_type": "attempt.started" if i == 0 else "file.discovered",
                    "timestamp": f"2026-11-28T09:{i:02d}:00Z",
                    "actor_id": "worker",
                    "payload": {"attempt_id": f"att-{n}", "task_id": f"task-{n % 200}", "i": i},
                    "bundle_id": f"b-{n}",
                    "target": "bench",
                    "received_at": f"2023-11-14T22:13:{20 + (n % 30):02d}Z",
                    "partition": n % PARTITIONS,
                    "revision": 1,
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """``leviathan-cp ARGS`` in a child process: (seconds, peak RSS MiB, stdout+stderr)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "leviathan_cp", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"leviathan-cp {args[0]} failed ({proc.returncode}): {output}")
    return seconds, usage.ru_maxrss / 1024, output


def live_batch(tag: str) -> Envelope:
    events = [
        WireEvent.model_validate(
            {
                "event_id": f"{tag}-{i}",
                "event_type": "file.discovered",
                "timestamp": "2026-11-28T09:00:00Z",
                "payload": {"attempt_id": tag, "path": f"src/m{i}.py"},
            }
        )
        for i in range(500)
    ]
    bundle = Bundle(target="bench", bundle_id=f"live-{tag}", events=events)
    return Envelope(bundle=bundle, received_at=time.time(), token_label="bench")


async def window(store: EventStore, seconds: float, tag: str) -> float:
    """Events/s one writer appends for ``seconds`` (partitions in turn)."""
    n, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        await store.write_batch(n % PARTITIONS, [live_batch(f"{tag}-{n}")])
        n += 1
        await asyncio.sleep(0)  # a consumer awaits Redis between batches
    return n * 500 / (time.perf_counter() - began)


async def retention_phase(settings: StorageSettings, seconds: float) -> tuple[float, float, int]:
    store = create_store(settings, writer=True)
    await store.open()
    try:
        alone: list[float] = [await window(store, seconds, "warm")]
        during: list[float] = []
        retain = asyncio.create_task(store.retain(OLD + 10**6, batch=5000))
        w = 0
        while not retain.done():
            during.append(await window(store, seconds, f"during{w}"))
            w += 1
        removed = sum(r.removed for r in await retain)
        for k in range(max(1, len(during))):
            alone.append(await window(store, seconds, f"after{k}"))
        statuses = [await store.verify_chain(p) for p in range(PARTITIONS)]
        assert all(s.ok for s in statuses), statuses
    finally:
        await store.close()
    return statistics.median(alone), statistics.median(during) if during else 0.0, removed


def one_backend(
    backend: str, source: Path, tmp: Path, events: int, dsn: str | None, seconds: float
) -> None:
    env = {
        **os.environ,
        "HOME": str(tmp / "home"),
        "LEVIATHAN_CONTROL_PLANE_BACKEND": backend,
        "LEVIATHAN_PARTITIONS": str(PARTITIONS),
        "LEVIATHAN_NDJSON_DIR": str(tmp / f"{backend}-data"),
    }
    if dsn is not None:
        env["POSTGRES_DSN"] = dsn
    seconds_in, rss_in, out = run_cli(["import", str(source)], env)
    assert f"{events} stored" in out, out
    target = tmp / f"{backend}-export.ndjson"
    seconds_out, rss_out, out = run_cli(["export", "-o", str(target)], env)
    assert f"export: {events} events" in out, out
    print(f"{backend:8} import: {events / seconds_in:10,.0f} events/s  peak RSS {rss_in:6.0f} MiB")
    print(
        f"{backend:8} export: {events / seconds_out:10,.0f} events/s  peak RSS {rss_out:6.0f} MiB"
    )
    target.unlink()
    settings = StorageSettings(
        backend=backend,
        ndjson_dir=tmp / f"{backend}-data",
        postgres_dsn=dsn,
        partitions=PARTITIONS,
    )
    alone, during, removed = asyncio.run(retention_phase(settings, seconds))
    drop_pct = (1 - during / alone) * 100 if alone else 0.0
    print(
        f"{backend:8} retention: removed {removed:,} events; writer {alone:,.0f} events/s alone, "
        f"{during:,.0f} while retaining: drop {drop_pct:.1f}%"
    )


def main(events: int, backends: list[str], admin_dsn: str, seconds: float) -> None:
    events -= events % BUNDLE
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as name:
        tmp = Path(name)
        source = tmp / "source.ndjson"
        with open(source, "wb") as fh:
            for line in export_lines(events):
                fh.write(line)
        print(f"source: {events:,} events, {source.stat().st_size / 1e6:.0f} MB")
        for backend in backends:
            dsn = (
                asyncio.run(scratchdb.create(admin_dsn, "lifecycle"))
                if backend == "postgres"
                else None
            )
            try:
                one_backend(backend, source, tmp, events, dsn, seconds)
            finally:
                if dsn is not None:
                    asyncio.run(scratchdb.drop(admin_dsn, dsn))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["ndjson", "postgres", "both"], default="both")
    parser.add_argument("--window", type=float, default=2.0, help="seconds per writer window")
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    chosen = ["ndjson", "postgres"] if args.backend == "both" else [args.backend]
    main(args.events, chosen, args.admin_dsn, args.window)
