"""Read side of the NDJSON backend: the query API's views from the SQLite index + files.

Pipeline position: :class:`storage.ndjson.store.NdjsonStore` runs these synchronous queries in
a worker thread for the ingest tier's query API. Node and edge data come from the index;
event bodies are read from the NDJSON lines the index points at, so what is shown is what
the hash chain covers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from storage.base import StoredEvent
from storage.ndjson import log
from storage.projection import ARTIFACT, ATTEMPT, DEPENDS_ON, PRODUCED, TASK
from storage.readside import (
    FAILURE_TYPES_SQL,
    InvalidCursor,
    artifact_nodes,
    attempt_node,
    attempt_summary,
    decode_cursor,
    display_time,
    encode_cursor,
    failure_view,
    node_view,
    task_summary,
    topology_page,
)
from storage.topology import SUMMARY
from storage.views import (
    AttemptDetail,
    AttemptSummary,
    EventView,
    FailureView,
    Page,
    TaskDetail,
    TaskSummary,
    TopologySummary,
)

EVENT_COLS = "gid, partition, offset, length, digest"
_TARGET = "COALESCE(json_extract(vals, '$.target'), json_extract(vals, '$.target_id'))"
_STATUS = "json_extract(vals, '$.status')"


def load_events(directory: Path, rows: Sequence[Sequence[Any]]) -> list[StoredEvent]:
    """Events of index rows ``(gid, partition, offset, length, digest)``, each file opened
    once."""
    with ExitStack() as stack:
        files: dict[int, log.Segments] = {}
        events = []
        for _, partition, offset, length, digest in rows:
            fh = files.get(partition)
            if fh is None:
                fh = files[partition] = stack.enter_context(log.Segments(directory, partition))
            events.append(log.decode_line(fh.read(offset, length), digest))
        return events


def node_props(con: sqlite3.Connection, node_type: str, node_id: str) -> dict[str, Any] | None:
    row = con.execute(
        "SELECT vals FROM nodes WHERE type = ? AND id = ?", (node_type, node_id)
    ).fetchone()
    return None if row is None else dict(orjson.loads(row[0]))


def list_attempts(
    con: sqlite3.Connection,
    target: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> Page[AttemptSummary]:
    where, args = ["type = ?"], [ATTEMPT]
    if target is not None:
        where.append(f"{_TARGET} = ?")
        args.append(target)
    if status is not None:
        where.append(f"{_STATUS} = ?")
        args.append(status)
    if cursor is not None:
        seen, after_id = decode_cursor(cursor, 2)
        where.append("(ls < ? OR (ls = ? AND id > ?))")
        args += [str(seen), str(seen), str(after_id)]
    rows = con.execute(
        f"SELECT id, vals, ls FROM (SELECT id, vals, type, "
        f"COALESCE(json_extract(vals, '$.last_seen'), '') AS ls FROM nodes) "
        f"WHERE {' AND '.join(where)} ORDER BY ls DESC, id ASC LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    items = [attempt_summary(r[0], orjson.loads(r[1])) for r in rows[:limit]]
    next_cursor = (
        encode_cursor([rows[limit - 1][2], rows[limit - 1][0]]) if len(rows) > limit else None
    )
    return Page[AttemptSummary](items=items, next_cursor=next_cursor)


def _produced_artifacts(con: sqlite3.Connection, attempt_id: str) -> list[tuple[str, Any]]:
    ids = [r[0] for r in con.execute(
        "SELECT dst FROM edges WHERE type = ? AND src_type = ? AND src = ? AND dst_type = ? "
        "ORDER BY dst",
        (PRODUCED, ATTEMPT, attempt_id, ARTIFACT),
    )]  # fmt: skip
    found = [(a, node_props(con, ARTIFACT, a)) for a in ids]
    return [(a, p) for a, p in found if p is not None]


def get_attempt(con: sqlite3.Connection, directory: Path, attempt_id: str) -> AttemptDetail | None:
    props = node_props(con, ATTEMPT, attempt_id)
    if props is None:
        return None
    rows = con.execute(
        f"SELECT {EVENT_COLS} FROM events WHERE attempt_id = ? ORDER BY gid", (attempt_id,)
    ).fetchall()
    events = load_events(directory, rows)
    bundle_rows = [
        dict(zip(("artifact_id", "sha256", "kind", "uri", "size", "bundle_id"), row, strict=True))
        | {"attempt_id": attempt_id}
        for row in con.execute(
            "SELECT artifact_id, sha256, kind, uri, size, bundle_id FROM artifacts "
            "WHERE attempt_id = ? ORDER BY rid",
            (attempt_id,),
        )
    ]
    return AttemptDetail(
        attempt_node=attempt_node(attempt_id, props, events),
        events=[e.view() for e in events],
        artifacts=artifact_nodes(_produced_artifacts(con, attempt_id), bundle_rows),
    )


def list_failures(
    con: sqlite3.Connection, directory: Path, target: str | None, limit: int
) -> list[FailureView]:
    sql = f"SELECT {EVENT_COLS} FROM events WHERE {FAILURE_TYPES_SQL}"
    args: list[Any] = []
    if target is not None:
        sql += " AND target = ?"
        args.append(target)
    rows = con.execute(sql + " ORDER BY gid DESC LIMIT ?", (*args, limit)).fetchall()
    failures = []
    for ev in load_events(directory, rows):
        attempt = node_props(con, ATTEMPT, ev.attempt_id) if ev.attempt_id else None
        failures.append(failure_view(ev, attempt))
    return failures


def list_events(
    con: sqlite3.Connection,
    directory: Path,
    after: str | None,
    limit: int,
    filters: dict[str, str | None],
) -> Page[EventView]:
    where: list[str] = ["1 = 1"]
    args: list[Any] = []
    if after is not None:
        (gid,) = decode_cursor(after, 1)
        where.append("gid > ?")
        if not isinstance(gid, int) or isinstance(gid, bool):
            raise InvalidCursor("cursor is not one this service issued")
        args.append(gid)
    for column, value in filters.items():
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    rows = con.execute(
        f"SELECT {EVENT_COLS} FROM events WHERE {' AND '.join(where)} ORDER BY gid LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    events = load_events(directory, rows[:limit])
    next_cursor = encode_cursor([rows[limit - 1][0]]) if len(rows) > limit else None
    return Page[EventView](items=[e.view() for e in events], next_cursor=next_cursor)


def _task_links(con: sqlite3.Connection, task_id: str) -> tuple[list[str], list[str], list[str]]:
    deps = [r[0] for r in con.execute(
        "SELECT dst FROM edges WHERE type = ? AND src_type = ? AND src = ? AND dst_type = ?",
        (DEPENDS_ON, TASK, task_id, TASK),
    )]  # fmt: skip
    dependents = [r[0] for r in con.execute(
        "SELECT src FROM edges WHERE type = ? AND dst_type = ? AND dst = ? AND src_type = ?",
        (DEPENDS_ON, TASK, task_id, TASK),
    )]  # fmt: skip
    attempts = [r[0] for r in con.execute(
        "SELECT src FROM edges WHERE type = ? AND dst_type = ? AND dst = ? AND src_type = ?",
        (DEPENDS_ON, TASK, task_id, ATTEMPT),
    )]  # fmt: skip
    return deps, dependents, attempts


def _attempts(con: sqlite3.Connection, ids: list[str]) -> list[AttemptSummary]:
    found = [(a, node_props(con, ATTEMPT, a)) for a in ids]
    summaries = [attempt_summary(a, p) for a, p in found if p is not None]
    return sorted(summaries, key=lambda s: (s.timestamp or "", s.attempt_id), reverse=True)


def task_summary_of(con: sqlite3.Connection, task_id: str, props: dict[str, Any]) -> TaskSummary:
    deps, dependents, attempt_ids = _task_links(con, task_id)
    attempts = _attempts(con, attempt_ids)
    latest = attempts[0].status if attempts else None
    return task_summary(
        task_id, props, depends_on=deps, dependents=dependents, latest_attempt_status=latest
    )


def list_tasks(
    con: sqlite3.Connection, target: str | None, status: str | None, limit: int
) -> list[TaskSummary]:
    where, args = ["type = ?"], [TASK]
    if target is not None:
        where.append(f"{_TARGET} = ?")
        args.append(target)
    if status is not None:
        where.append(f"{_STATUS} = ?")
        args.append(status)
    rows = con.execute(
        f"SELECT id, vals FROM nodes WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [task_summary_of(con, r[0], orjson.loads(r[1])) for r in rows]


def get_task(con: sqlite3.Connection, task_id: str) -> TaskDetail | None:
    props = node_props(con, TASK, task_id)
    if props is None:
        return None
    _, _, attempt_ids = _task_links(con, task_id)
    return TaskDetail(
        task=task_summary_of(con, task_id, props),
        task_node=node_view(TASK, task_id, props),
        attempts=_attempts(con, attempt_ids),
    )


# Primary-key lookups and range scans of the topology table (plans checked in
# tests/storage/test_topology.py): independent of the size of the event log.
TOPOLOGY_SUMMARY_SQL = (
    "SELECT payload, version_ts, event_id FROM topology WHERE target = ? AND kind = ? AND item = ''"
)
TOPOLOGY_COUNTS_SQL = "SELECT kind, count(*) FROM topology WHERE target = ? GROUP BY kind"
TOPOLOGY_ITEMS_SQL = (
    "SELECT item, payload FROM topology WHERE target = ? AND kind = ? AND item > ? "
    "ORDER BY item LIMIT ?"
)


def topology_summary(con: sqlite3.Connection, target: str) -> TopologySummary | None:
    row = con.execute(TOPOLOGY_SUMMARY_SQL, (target, SUMMARY)).fetchone()
    if row is None:
        return None
    counts = con.execute(TOPOLOGY_COUNTS_SQL, (target,)).fetchall()
    return TopologySummary(
        target=target,
        payload=orjson.loads(row[0]),
        timestamp=display_time(row[1]) or row[1],
        event_id=row[2],
        counts={kind: int(n) for kind, n in counts if kind != SUMMARY},
    )


def topology_items(
    con: sqlite3.Connection, target: str, kind: str, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    """Payloads of one kind of item of ``target``, by item key; keyset pages."""
    after = "" if cursor is None else str(decode_cursor(cursor, 1)[0])
    rows = con.execute(TOPOLOGY_ITEMS_SQL, (target, kind, after, limit + 1)).fetchall()
    return topology_page([(item, orjson.loads(payload)) for item, payload in rows], limit)
