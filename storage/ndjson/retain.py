"""Retention of the NDJSON backend: cut each partition's chain, delete whole segments.

Pipeline position: ``NdjsonStore.retain`` (``leviathan-cp retain``, the consumer's
maintenance). Per partition, in batches: find, without the write lock, the leading run of
events past the checkpoint that arrived before the cut (:func:`storage.retention.prefix_end`);
then, under the write lock, in one short SQLite transaction, delete their index rows and
move the checkpoint to the last of them (its seq, hash, arrival time and the log offset
right after it). Writers wait at most one batch's delete, and each batch is followed by
a pause as long as it took. Segment files that lie wholly
before the checkpoint are then deleted; lines of removed events in the segment the
checkpoint falls in stay on disk, unlisted, until that segment goes too.

The newest row of the whole index is never removed: ``events.gid`` is a plain rowid, and
SQLite would hand out ids again after the greatest one was deleted.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from typing import TYPE_CHECKING, Any

from storage.base import LogStat, Retained
from storage.chain import Checkpoint
from storage.ndjson import index as idx
from storage.ndjson import log, spans
from storage.ndjson import read as rd
from storage.retention import arrival, prefix_end, retain_partition

if TYPE_CHECKING:
    from storage.ndjson.store import NdjsonStore


async def retain(store: NdjsonStore, before: float, batch: int) -> list[Retained]:
    results = []
    for partition in await store.partitions():

        async def one(p: int = partition) -> tuple[int, Checkpoint, bool] | None:
            return await _step(store, p, before, batch)

        done = await retain_partition(partition, one)
        await asyncio.to_thread(_drop_segments, store, partition)
        if done is not None:
            results.append(done)
    return results


async def _step(
    store: NdjsonStore, partition: int, before: float, batch: int
) -> tuple[int, Checkpoint, bool] | None:
    """One batch: ``(removed, new checkpoint, whole batch removed)``, None if nothing."""

    def plan(con: sqlite3.Connection) -> tuple[int, list[Any], int]:
        found = idx.checkpoint(con, partition)
        after = found[0].seq if found else 0
        rows = con.execute(
            f"SELECT {rd.EVENT_COLS} FROM events WHERE partition = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (partition, after, batch),
        ).fetchall()
        newest = con.execute("SELECT max(gid) FROM events").fetchone()[0]
        return after, rows, newest

    after, rows, newest = await store._run(plan)
    if not rows:
        return None
    kept = list(rows)
    for i, r in enumerate(rows):
        if r[0] == newest:
            kept = rows[:i]
            break
    arrivals = await asyncio.to_thread(_arrivals, store, partition, kept)
    _, count = prefix_end(arrivals, before)
    if count == 0:
        return None
    row = kept[count - 1]
    last = (await asyncio.to_thread(rd.load_events, store.directory, [row]))[0]
    point = Checkpoint(last.seq, last.hash, last.received_at)
    end = int(row[2]) + int(row[3])

    def apply(con: sqlite3.Connection) -> bool:
        with idx.immediate(con):
            found = idx.checkpoint(con, partition)
            if (found[0].seq if found else 0) != after:  # another retain ran meanwhile
                return False  # nothing written: the empty transaction commits
            con.execute(
                "DELETE FROM events WHERE partition = ? AND seq > ? AND seq <= ?",
                (partition, after, point.seq),
            )
            spans.forget_before(con)
            idx.set_checkpoint(con, partition, point, end)
            return True

    if not await store._run(store._locked(apply)):
        return None
    return count, point, count == len(rows)


class _Arrival:
    __slots__ = ("received_at",)

    def __init__(self, text: str) -> None:
        self.received_at = text


_KEY = b'"received_at":"'


def _arrivals(store: NdjsonStore, partition: int, rows: list[Any]) -> list[_Arrival]:
    """Each row's ``received_at``, cut out of its line without parsing the payload (the
    key's last occurrence: only the chain fields, never strings, follow it in a line)."""
    out = []
    with log.Segments(store.directory, partition) as segments:
        for row in rows:
            line = segments.read(int(row[2]), int(row[3]))
            at = line.rfind(_KEY) + len(_KEY)
            out.append(_Arrival(line[at : line.index(b'"', at)].decode()))
    return out


def _drop_segments(store: NdjsonStore, partition: int) -> None:
    """Delete the segments that end at or before the checkpoint (never the active one)."""
    with store._mu:
        found = store._call(lambda con: idx.checkpoint(con, partition))
    if found is None:
        return
    offset = found[1]
    present = log.segments(store.directory, partition)
    for (_, path), (next_base, _) in itertools.pairwise(present):
        if next_base <= offset:
            path.unlink(missing_ok=True)


async def log_stats(store: NdjsonStore) -> list[LogStat]:
    def query(con: sqlite3.Connection) -> list[tuple[int, int, list[Any]]]:
        out = []
        for partition, seq in con.execute("SELECT partition, seq FROM heads ORDER BY 1").fetchall():
            found = idx.checkpoint(con, int(partition))
            start = found[0].seq if found else 0
            first = con.execute(
                f"SELECT {rd.EVENT_COLS} FROM events WHERE partition = ? AND seq > ? "
                "ORDER BY seq LIMIT 1",
                (partition, start),
            ).fetchall()
            out.append((int(partition), int(seq) - start, first))
        return out

    rows = await store._run(query)

    def measure() -> list[LogStat]:
        stats = []
        for partition, events, first in rows:
            size = sum(p.stat().st_size for _, p in log.segments(store.directory, partition))
            oldest = None
            if first:
                oldest = arrival(rd.load_events(store.directory, first)[0].received_at)
            stats.append(LogStat(partition, events, size, oldest))
        return stats

    return await asyncio.to_thread(measure)
