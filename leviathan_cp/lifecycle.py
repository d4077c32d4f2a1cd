"""``leviathan-cp export``, ``import`` and ``retain``: move the event log in and out, cut it.

Pipeline position: beside the tiers, talking to storage only (settings from
:class:`storage.config.StorageSettings`, as ``verify``). ``export`` pages through the
storage's ``/v1/events`` listing (:mod:`storage.lifecycle.export`); ``import`` writes
through the storage layer's ``write_batch``, the call the consumers make
(:mod:`storage.lifecycle.importer`; why not through the ingest API: docs/operations.md,
"Export, import and moving between backends"). A bad setting or an unreachable storage
prints one line and exits 2; lines that cannot be imported are listed with their line
numbers and the import goes on (exit 1 at the end if there were any).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import BinaryIO

from leviathan_cp import devstate
from leviathan_cp.admin import settings_or_none
from storage.base import EventStore, StorageError
from storage.config import StorageSettings, create_store
from storage.lifecycle.export import export_events
from storage.lifecycle.importer import Importer, ImportReport, Incoming
from storage.lifecycle.original import ChainCheck, journal_path
from storage.lifecycle.sources import (
    IdCount,
    Item,
    OriginalMapper,
    read_export,
    read_original,
)
from storage.retention import cut_of_days, parse_cut

FORMATS = ("export", "original", "original-postgres")
MAX_LISTED = 50  # rejected lines printed one by one; the rest are counted


def _tty_progress(label: str) -> Callable[[int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(n: int) -> None:
        print(f"\r{label}: {n:,} events", end="", file=sys.stderr, flush=True)

    return show


async def _opened(settings: StorageSettings) -> EventStore:
    store = create_store(settings, writer=True)
    await store.open()
    return store


# -- export ---------------------------------------------------------------------------
async def _export(settings: StorageSettings, args: argparse.Namespace, out: BinaryIO) -> int:
    store = create_store(settings)
    await store.open()
    try:
        progress = _tty_progress("exported")
        result = await export_events(
            store, out, after=args.after, target=args.target, progress=progress
        )
    finally:
        await store.close()
    if progress is not None:
        print(file=sys.stderr)
    resume = f"; resume with --after {result.resume}" if result.resume else ""
    print(f"export: {result.events} events{resume}", file=sys.stderr)
    return 0


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="leviathan-cp export",
        description="Write every stored event (every revision) as NDJSON in the /v1/events "
        "shape, oldest first.",
    )
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    parser.add_argument("--after", help="resume after this cursor (printed by a previous run)")
    parser.add_argument("--target", help="only the events of this target")
    args = parser.parse_args(argv)
    devstate.apply("export")
    settings = settings_or_none()
    if settings is None:
        return 2
    try:
        with _output(args.output) as out:
            return asyncio.run(_export(settings, args, out))
    except (OSError, StorageError) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # an --after cursor this storage did not issue
        print(f"export: --after: {exc}", file=sys.stderr)
        return 2


def _output(path: Path | None) -> AbstractContextManager[BinaryIO]:
    return nullcontext(sys.stdout.buffer) if path is None else path.open("wb")


# -- import ---------------------------------------------------------------------------
def _files(source: Path) -> Iterator[Path]:
    if source.is_dir():
        yield from sorted(p for p in source.iterdir() if p.suffix in (".ndjson", ".jsonl"))
    else:
        yield source


async def _feed(importer: Importer, items: Iterator[Item] | AsyncIterator[Item]) -> None:
    if isinstance(items, Iterator):
        for item in items:
            await _one(importer, item)
    else:
        async for item in items:
            await _one(importer, item)


async def _one(importer: Importer, item: Item) -> None:
    if isinstance(item, Incoming):
        await importer.add(item)
    else:
        importer.bad_line(*item)


async def _original_postgres(dsn: str, mapper: OriginalMapper) -> tuple[AsyncIterator[Item], str]:
    from storage.postgres.original import PostgresChainCheck, read_events

    check = PostgresChainCheck()

    async def items() -> AsyncIterator[Item]:
        async for row_id, event, arrival in read_events(dsn, check):
            yield mapper.incoming(row_id, event, arrival)
        print(check.summary(), file=sys.stderr)

    return items(), "row"


async def _import(settings: StorageSettings, args: argparse.Namespace) -> ImportReport:
    store = await _opened(settings)
    counter = _tty_progress("imported")
    importer = Importer(
        store,
        settings.layout,
        progress=None if counter is None else (lambda r: counter(r.lines)),
    )
    ids: set[str] | IdCount = IdCount()
    unit = "line"
    try:
        if args.format == "export":
            for path in _files(Path(args.source)):
                await _feed(importer, read_export(path, ids))
        elif args.format == "original":
            # the original's ids repeat without a revision number: counted in a set (its
            # journals are small; every other source is read in constant memory)
            original_ids: set[str] = set()
            ids, chain = original_ids, ChainCheck()
            mapper = OriginalMapper(args.target)
            await _feed(
                importer,
                read_original(journal_path(Path(args.source)), chain, mapper, original_ids),
            )
            print(chain.summary(), file=sys.stderr)
        else:
            mapper = OriginalMapper(args.target)
            rows, unit = await _original_postgres(args.source, mapper)
            await _feed(importer, rows)
        report = await importer.finish()
    finally:
        await store.close()
    if counter is not None:
        print(file=sys.stderr)
    # the original's table has a UNIQUE event_id: one id per row
    report.ids = report.lines if args.format == "original-postgres" else len(ids)
    for line, reason in report.rejected[:MAX_LISTED]:
        print(f"{unit} {line}: not imported: {reason}", file=sys.stderr)
    if len(report.rejected) > MAX_LISTED:
        print(f"… and {len(report.rejected) - MAX_LISTED} more", file=sys.stderr)
    return report


def import_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="leviathan-cp import",
        description="Store events from an export, the original control plane's NDJSON data "
        "root or journal, or its PostgreSQL database, through the storage layer. Idempotent: "
        "events already stored are duplicates, new content under a known id a revision.",
    )
    parser.add_argument(
        "source", help="FILE or DIR (export, original) or a DSN (original-postgres)"
    )
    parser.add_argument("--format", choices=FORMATS, default="export")
    parser.add_argument(
        "--target", help="target of original events whose payload names none (no target_id)"
    )
    args = parser.parse_args(argv)
    devstate.apply("import")
    settings = settings_or_none()
    if settings is None:
        return 2
    if args.format != "original-postgres" and not Path(args.source).exists():
        print(f"import: no such file or directory: {args.source}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_import(settings, args))
    except (OSError, StorageError) as exc:
        print(f"import: storage unavailable: {exc}", file=sys.stderr)
        return 2
    print(f"import: {report.summary()}")
    return 1 if report.rejected else 0


# -- retain ---------------------------------------------------------------------------
async def _retain(settings: StorageSettings, before: float, batch: int) -> int:
    store = await _opened(settings)
    try:
        done = await store.retain(before, batch=batch)
    finally:
        await store.close()
    for r in done:
        cp = r.checkpoint
        where = (
            "" if cp is None else f", checkpoint seq {cp.seq} {cp.hash[:16]}… ({cp.received_at})"
        )
        print(f"partition {r.partition}: removed {r.removed} events{where}")
    print(f"retain: {sum(r.removed for r in done)} events removed")
    return 0


def retain_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="leviathan-cp retain",
        description="Remove the events that arrived before a date (by arrival time, not the "
        "event's timestamp). The graph and topology index keep their state; each partition's "
        "chain keeps a checkpoint that verify starts from.",
    )
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--before", help="ISO date or date-time (UTC unless it has an offset)")
    when.add_argument(
        "--days", type=float, help="keep this many days (as LEVIATHAN_RETENTION_DAYS)"
    )
    parser.add_argument("--batch", type=int, default=5000, help="events per delete transaction")
    args = parser.parse_args(argv)
    try:
        cut = parse_cut(args.before) if args.before else cut_of_days(args.days)
    except ValueError as exc:
        print(f"retain: --before: {exc}", file=sys.stderr)
        return 2
    devstate.apply("retain")
    settings = settings_or_none()
    if settings is None:
        return 2
    try:
        return asyncio.run(_retain(settings, cut, max(1, args.batch)))
    except (OSError, StorageError) as exc:
        print(f"retain: storage unavailable: {exc}", file=sys.stderr)
        return 2
