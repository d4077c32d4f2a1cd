"""Write path of the NDJSON backend: dedup, chain, append+fsync, index+graph commit.

Pipeline position: called (in a worker thread, under the directory's inter-process
lock) by :meth:`storage.ndjson.store.NdjsonStore.write_batch` for each consumer batch. Order
for crash safety: lines are appended and fsynced first, then one SQLite transaction
records them, the new chain head, artifacts and the merged graph. A crash between the two
leaves complete lines past the indexed size, which :func:`recover` indexes on the next
write or open; an exception before the commit truncates the file back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any

from orjson import Fragment

from storage import topology
from storage.base import BatchResult, StorageCorrupt, StoredEvent
from storage.chain import GENESIS_HASH, content_digest, digest_of, link_of
from storage.envelope import Envelope
from storage.ndjson import graph, log, spans
from storage.ndjson import index as idx
from storage.projection import PROJECTED_TYPES, fold
from storage.revisions import Tally, sort_event
from storage.schema import artifact_id_of, bundle_attempt


@dataclass(slots=True)
class _Plan:
    """The new events of a batch, ready to append at ``start`` (their lines end at ``size``)."""

    seq: int
    prev: str
    start: int
    size: int
    lines: list[bytes] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    projected: list[StoredEvent] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)


def _plan(
    con: sqlite3.Connection,
    partition: int,
    envelopes: Sequence[Envelope],
    head: tuple[int, str, int],
) -> _Plan:
    """Dedup, chain and encode the batch in one pass (offsets from the indexed file size).

    Each event's line, index row and chain link are made here at once: the per-event cost
    of this loop is most of the NDJSON consumer's time. Duplicates and revisions are
    sorted out as :mod:`storage.revisions` describes (the new-id case inline).
    """
    ids = [ev.event_id for env in envelopes for ev in env.bundle.events]
    known = idx.stored_digests(con, list(dict.fromkeys(ids)))
    seq, prev, size = head
    plan = _Plan(seq, prev, size, size)
    lines, rows, projected, tally = plan.lines, plan.rows, plan.projected, plan.tally
    for env in envelopes:
        bundle = env.bundle
        bundle_id, target = bundle.bundle_id, bundle.target
        received = log.received_at_text(env.received_at)
        # each payload serialised once (at decode, else here) for digest, link and line
        timestamps, payloads = env.texts()
        for ev, timestamp, pbytes in zip(bundle.events, timestamps, payloads, strict=True):
            event_id, event_type, actor_id = ev.event_id, ev.event_type, ev.actor_id
            frag = Fragment(pbytes)
            digest = digest_of(event_type, timestamp, actor_id, frag)
            revision = sort_event(known, tally, env.entry_id, event_id, digest)
            if not revision:
                continue  # a duplicate
            seq += 1
            hash_ = link_of(event_id, event_type, timestamp, actor_id, frag, prev)
            line = log.encode_line(
                event_id, event_type, timestamp, actor_id, frag, bundle_id, target, received,
                partition, seq, prev, hash_, revision,
            )  # fmt: skip
            lines.append(line)
            payload = ev.payload
            task_id, attempt_id = payload.get("task_id"), payload.get("attempt_id")
            rows.append(  # the layout of _index_row, inline: this loop is the hot path
                (event_id, digest, partition, seq, size, len(line), event_type, timestamp,
                 task_id if type(task_id) is str else None,
                 attempt_id if type(attempt_id) is str else None, target, revision)
            )  # fmt: skip
            size += len(line)
            if event_type in PROJECTED_TYPES:  # the fold skips the others: build no object
                projected.append(
                    StoredEvent(
                        event_id, event_type, timestamp, actor_id, payload, bundle_id, target,
                        received, partition, seq, prev, hash_, revision, digest,
                    )
                )  # fmt: skip
            prev = hash_
    plan.seq, plan.prev, plan.size = seq, prev, size
    return plan


def _index_row(ev: StoredEvent, digest: str, offset: int, length: int) -> tuple[Any, ...]:
    """The index row of a stored line (the layout :func:`_plan` builds inline)."""
    return (ev.event_id, digest, ev.partition, ev.seq, offset, length, ev.event_type,
            ev.timestamp, ev.task_id, ev.attempt_id, ev.target, ev.revision)  # fmt: skip


_INSERT_EVENTS = (
    "INSERT INTO events(event_id, digest, partition, seq, offset, length, event_type, "
    "timestamp, task_id, attempt_id, target, revision) VALUES "
)
_COLUMNS = 12
_EVENT_ROW = "(" + ", ".join("?" * _COLUMNS) + ")"
_MAX_ROWS_PER_INSERT = 256


def rows_per_insert(con: sqlite3.Connection) -> int:
    """Rows per INSERT: 256, fewer where SQLite allows fewer host parameters (999 before
    3.32)."""
    return min(_MAX_ROWS_PER_INSERT, con.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _COLUMNS)


def _insert_events(con: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    # Many rows per statement: executemany steps (and releases the GIL) once per row, and
    # that per-row overhead was a quarter of the insert.
    per = rows_per_insert(con)
    whole = len(rows) - len(rows) % per
    if whole:
        sql = _INSERT_EVENTS + ", ".join([_EVENT_ROW] * per)
        flat = list(chain.from_iterable(rows[:whole]))
        width = _COLUMNS * per
        for start in range(0, len(flat), width):
            con.execute(sql, flat[start : start + width])
    if whole < len(rows):
        con.executemany(_INSERT_EVENTS + _EVENT_ROW, rows[whole:])
    spans.record(con, rows)


def _store_artifacts(con: sqlite3.Connection, envelopes: Sequence[Envelope]) -> None:
    rows = []
    for env in envelopes:
        bundle = env.bundle
        if not bundle.artifacts:
            continue
        attempt = bundle_attempt(bundle)
        for art in bundle.artifacts:
            rows.append(
                (
                    bundle.bundle_id,
                    attempt,
                    artifact_id_of(art.model_extra, art.sha256),
                    art.sha256,
                    art.kind,
                    art.uri,
                    art.size,
                )
            )
    if not rows:
        return
    con.executemany(
        "INSERT OR IGNORE INTO artifacts(bundle_id, attempt_id, artifact_id, sha256, kind, "
        "uri, size) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def recover(con: sqlite3.Connection, directory: Path, partition: int) -> None:
    """Index complete lines the index does not know yet (inside the caller's transaction)."""
    seq, prev, size = idx.head(con, partition) or (0, GENESIS_HASH, 0)
    events: list[StoredEvent] = []
    rows: list[tuple[Any, ...]] = []
    for base, path in log.segments(directory, partition):
        end = base + path.stat().st_size
        if end <= size:
            continue
        if size < base:
            raise StorageCorrupt(f"{path.name} starts at byte {base}, the log ends at {size}")
        for local, line in log.tail(path, size - base):
            offset = base + local
            try:
                ev = log.decode_line(line)
            except ValueError as exc:  # the log itself, not a batch's data: an operator's case
                raise StorageCorrupt(f"{path.name} at byte {local}: {exc}") from None
            digest = content_digest(
                event_type=ev.event_type,
                timestamp=ev.timestamp,
                actor_id=ev.actor_id,
                payload=ev.payload,
            )
            ev = replace(ev, digest=digest)
            rows.append(_index_row(ev, digest, offset, len(line)))
            events.append(ev)
            seq, prev, size = ev.seq, ev.hash, offset + len(line)
    if events:
        _insert_events(con, rows)
        graph.merge_graph(con, fold(events))
        graph.merge_topology(con, topology.rows_of_events(events))
        idx.set_head(con, partition, seq, prev, size)


def _segment_for(directory: Path, partition: int, indexed: int) -> tuple[int, Path]:
    """The segment to append to: the newest, or a new one once it is full."""
    base, path = log.active(directory, partition)
    if indexed - base >= log.SEGMENT_BYTES:
        return indexed, log.segment_path(directory, partition, indexed)
    return base, path


def write_batch(
    con: sqlite3.Connection, directory: Path, partition: int, envelopes: Sequence[Envelope]
) -> BatchResult:
    """The whole write, atomically; the caller holds the inter-process lock."""
    path, base = log.partition_path(directory, partition), 0
    appended, start = False, 0
    con.execute("BEGIN IMMEDIATE")
    try:
        recover(con, directory, partition)
        plan = _plan(con, partition, envelopes, idx.head(con, partition) or (0, GENESIS_HASH, 0))
        if plan.lines:
            base, path = _segment_for(directory, partition, plan.start)
            start, size = log.append(path, b"".join(plan.lines))
            appended = True
            start, size = base + start, base + size
            if start != plan.start:  # offsets were planned from the indexed size
                raise StorageCorrupt(f"{path.name} ends at {start}, the index says {plan.start}")
            _insert_events(con, plan.rows)
            graph.merge_graph(con, fold(plan.projected))
            idx.set_head(con, partition, plan.seq, plan.prev, size)
        _store_artifacts(con, envelopes)
        graph.merge_topology(con, topology.rows_of_envelopes(envelopes))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        if appended:
            log.truncate(path, start - base)
        raise
    outcomes = plan.tally.outcomes(envelopes)
    return BatchResult(len(plan.lines), plan.tally.duplicates, plan.tally.revisions, outcomes)
