"""Write path of the NDJSON backend: dedup, chain, append+fsync, index+graph commit.

Pipeline position: called (in a worker thread, under the directory's inter-process
lock) by :meth:`storage.ndjson.NdjsonStore.write_batch` for each consumer batch. Order
for crash safety: lines are appended and fsynced first, then one SQLite transaction
records them, the new chain head, artifacts and the merged graph. A crash between the two
leaves complete lines past the indexed size, which :func:`recover` indexes on the next
write or open; an exception before the commit truncates the file back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from orjson import Fragment

from storage import ndjson_index as idx
from storage import ndjson_log as log
from storage.base import BatchResult, Conflict, StoredEvent
from storage.chain import GENESIS_HASH, content_digest, digest_of, link_of
from storage.envelope import Envelope
from storage.projection import fold
from storage.schema import Bundle


@dataclass(slots=True)
class _Plan:
    events: list[StoredEvent] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)


def _plan(
    con: sqlite3.Connection, partition: int, envelopes: Sequence[Envelope], seq: int, prev: str
) -> _Plan:
    ids = [ev.event_id for env in envelopes for ev in env.bundle.events]
    known = idx.stored_digests(con, list(dict.fromkeys(ids)))
    plan = _Plan()
    events, digests = plan.events, plan.digests
    for env in envelopes:
        bundle = env.bundle
        bundle_id, target = bundle.bundle_id, bundle.target
        received = log.received_at_text(env.received_at)
        # each payload serialised once (at decode, else here) for digest and link alike
        timestamps, payloads = env.texts()
        for ev, timestamp, pbytes in zip(bundle.events, timestamps, payloads, strict=True):
            event_id, event_type, actor_id = ev.event_id, ev.event_type, ev.actor_id
            frag = Fragment(pbytes)
            digest = digest_of(event_type, timestamp, actor_id, frag)
            stored = known.get(event_id)
            if stored == digest:
                plan.duplicates += 1
                continue
            if stored is not None:
                plan.conflicts.append(
                    Conflict(
                        event_id=event_id,
                        entry_id=env.entry_id,
                        bundle_id=bundle_id,
                        target=target,
                        event=ev.model_dump(mode="json"),
                        stored_digest=stored,
                        new_digest=digest,
                    )
                )
                continue
            known[event_id] = digest  # later copies in this batch dedup against it
            seq += 1
            hash_ = link_of(event_id, event_type, timestamp, actor_id, frag, prev)
            events.append(
                StoredEvent(
                    event_id,
                    event_type,
                    timestamp,
                    actor_id,
                    ev.payload,
                    bundle_id,
                    target,
                    received,
                    partition,
                    seq,
                    prev,
                    hash_,
                )
            )
            digests.append(digest)
            prev = hash_
    return plan


def _index_rows(
    events: Sequence[StoredEvent], digests: Sequence[str], lines: Sequence[bytes], start: int
) -> list[tuple[Any, ...]]:
    rows = []
    offset = start
    for ev, digest, line in zip(events, digests, lines, strict=True):
        rows.append(
            (
                ev.event_id,
                digest,
                ev.partition,
                ev.seq,
                offset,
                len(line),
                ev.event_type,
                ev.timestamp,
                ev.task_id,
                ev.attempt_id,
                ev.target,
            )
        )
        offset += len(line)
    return rows


_INSERT_EVENTS = (
    "INSERT INTO events(event_id, digest, partition, seq, offset, length, event_type, "
    "timestamp, task_id, attempt_id, target) VALUES "
)
_COLUMNS = 11
_EVENT_ROW = "(" + ", ".join("?" * _COLUMNS) + ")"
_ROWS_PER_INSERT = 64


def _insert_events(con: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    # Many rows per statement: executemany steps (and releases the GIL) once per row, and
    # that per-row overhead was a quarter of the insert; 64 rows stay under the host
    # parameter limit of old SQLite builds (999).
    whole = len(rows) - len(rows) % _ROWS_PER_INSERT
    if whole:
        sql = _INSERT_EVENTS + ", ".join([_EVENT_ROW] * _ROWS_PER_INSERT)
        flat = list(chain.from_iterable(rows[:whole]))
        width = _COLUMNS * _ROWS_PER_INSERT
        for start in range(0, len(flat), width):
            con.execute(sql, flat[start : start + width])
    if whole < len(rows):
        con.executemany(_INSERT_EVENTS + _EVENT_ROW, rows[whole:])


def _bundle_attempt(bundle: Bundle) -> str | None:
    ids = {ev.payload.get("attempt_id") for ev in bundle.events}
    ids.discard(None)
    if len(ids) != 1:
        return None
    only = ids.pop()
    return only if isinstance(only, str) else str(only)


def _store_artifacts(con: sqlite3.Connection, envelopes: Sequence[Envelope]) -> None:
    rows = []
    for env in envelopes:
        bundle = env.bundle
        attempt = _bundle_attempt(bundle)
        for art in bundle.artifacts or []:
            extra = art.model_extra or {}
            artifact_id = extra.get("artifact_id")
            rows.append(
                (
                    bundle.bundle_id,
                    attempt,
                    artifact_id if isinstance(artifact_id, str) else art.sha256,
                    art.sha256,
                    art.kind,
                    art.uri,
                    art.size,
                )
            )
    con.executemany(
        "INSERT OR IGNORE INTO artifacts(bundle_id, attempt_id, artifact_id, sha256, kind, "
        "uri, size) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def recover(con: sqlite3.Connection, directory: Path, partition: int) -> None:
    """Index complete lines the index does not know yet (inside the caller's transaction)."""
    path = log.partition_path(directory, partition)
    if not path.exists():
        return
    seq, prev, size = idx.head(con, partition) or (0, GENESIS_HASH, 0)
    events: list[StoredEvent] = []
    rows: list[tuple[Any, ...]] = []
    for offset, line in log.tail(path, size):
        ev = log.decode_line(line)
        digest = content_digest(
            event_type=ev.event_type,
            timestamp=ev.timestamp,
            actor_id=ev.actor_id,
            payload=ev.payload,
        )
        rows.extend(_index_rows([ev], [digest], [line], offset))
        events.append(ev)
        seq, prev, size = ev.seq, ev.hash, offset + len(line)
    if events:
        _insert_events(con, rows)
        idx.merge_graph(con, fold(events))
        idx.set_head(con, partition, seq, prev, size)


def write_batch(
    con: sqlite3.Connection, directory: Path, partition: int, envelopes: Sequence[Envelope]
) -> BatchResult:
    """The whole write, atomically; the caller holds the inter-process lock."""
    path = log.partition_path(directory, partition)
    appended, start = False, 0
    con.execute("BEGIN IMMEDIATE")
    try:
        recover(con, directory, partition)
        seq, prev, size = idx.head(con, partition) or (0, GENESIS_HASH, 0)
        plan = _plan(con, partition, envelopes, seq, prev)
        if plan.events:
            lines = [log.encode_line(ev) for ev in plan.events]
            start, size = log.append(path, b"".join(lines))
            appended = True
            _insert_events(con, _index_rows(plan.events, plan.digests, lines, start))
            idx.merge_graph(con, fold(plan.events))
            last = plan.events[-1]
            idx.set_head(con, partition, last.seq, last.hash, size)
        _store_artifacts(con, envelopes)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        if appended:
            log.truncate(path, start)
        raise
    return BatchResult(len(plan.events), plan.duplicates, plan.conflicts)
