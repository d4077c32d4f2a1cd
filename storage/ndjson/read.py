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
from storage.ndjson import log, spans
from storage.projection import ARTIFACT, ATTEMPT, DEPENDS_ON, LAST_SEEN, PRODUCED, TASK
from storage.readside import (
    FAILURE_TYPES_SQL,
    InvalidCursor,
    artifact_nodes,
    attempt_node,
    attempt_summary,
    decode_cursor,
    decode_event_cursor,
    decode_key_cursor,
    display_time,
    encode_cursor,
    failure_view,
    latest_status,
    newest_first,
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
# The node columns the listings filter on (storage.ndjson.graph fills them)
LISTED_COLUMNS = ("target", "status")
# Node types the API lists (newest first, filtered by target and status): each has its
# partial indexes, which SQLite uses only when the query names the type as a literal.
LISTED_TYPES = (ATTEMPT, TASK)


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


def _newest_nodes(
    con: sqlite3.Connection,
    node_type: str,
    target: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    """``(id, props)`` of nodes of a type, newest first by rowid (assigned when the node
    is first stored, kept by every merge: pages neither skip nor repeat a node while
    writers update it), through the ``(type, target)`` / ``(type, status)`` / ``(type)``
    indexes (the type's partial ones), whose entries end in the rowid."""
    assert node_type in LISTED_TYPES  # spelt into the SQL: the partial indexes need it
    where: list[str] = [f"type = '{node_type}'"]
    args: list[Any] = []
    if target is not None:
        where.append("target = ?")
        args.append(target)
    if status is not None:
        where.append("status = ?")
        args.append(status)
    if cursor is not None:
        where.append("rowid < ?")
        args.append(decode_key_cursor(cursor))
    rows = con.execute(
        f"SELECT id, vals, rowid FROM nodes WHERE {' AND '.join(where)} "
        "ORDER BY rowid DESC LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    next_cursor = encode_cursor([rows[limit - 1][2]]) if len(rows) > limit else None
    return [(r[0], orjson.loads(r[1])) for r in rows[:limit]], next_cursor


def list_attempts(
    con: sqlite3.Connection,
    target: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> Page[AttemptSummary]:
    rows, next_cursor = _newest_nodes(con, ATTEMPT, target, status, limit, cursor)
    items = [attempt_summary(node_id, props) for node_id, props in rows]
    return Page[AttemptSummary](items=items, next_cursor=next_cursor)


def _produced_artifacts(con: sqlite3.Connection, attempt_id: str) -> list[tuple[str, Any]]:
    rows = con.execute(
        "SELECT n.id, n.vals FROM edges e JOIN nodes n ON n.type = e.dst_type AND n.id = e.dst "
        "WHERE e.type = ? AND e.src_type = ? AND e.src = ? AND e.dst_type = ? ORDER BY e.dst",
        (PRODUCED, ATTEMPT, attempt_id, ARTIFACT),
    ).fetchall()
    return [(r[0], orjson.loads(r[1])) for r in rows]


def get_attempt(con: sqlite3.Connection, directory: Path, attempt_id: str) -> AttemptDetail | None:
    props = node_props(con, ATTEMPT, attempt_id)
    if props is None:
        return None
    rows = con.execute(
        spans.events_sql(EVENT_COLS, "attempt_id", [], limit=False), (attempt_id, 0, 0)
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
    con: sqlite3.Connection,
    directory: Path,
    target: str | None,
    limit: int,
    cursor: str | None = None,
) -> Page[FailureView]:
    """Newest stored first, each with its attempt node, in one statement: the partial
    index of failure events backwards (``target`` filters it), a primary-key probe each."""
    cols = ", ".join(f"e.{c.strip()}" for c in EVENT_COLS.split(","))
    sql = (
        f"SELECT {cols}, n.vals FROM events e INDEXED BY events_failures "
        "LEFT JOIN nodes n ON n.type = 'Attempt' AND n.id = e.attempt_id "
        f"WHERE e.{FAILURE_TYPES_SQL}"
    )
    args: list[Any] = []
    if target is not None:
        sql += " AND e.target = ?"
        args.append(target)
    if cursor is not None:
        sql += " AND e.gid < ?"
        args.append(decode_key_cursor(cursor))
    rows = con.execute(sql + " ORDER BY e.gid DESC LIMIT ?", (*args, limit + 1)).fetchall()
    page = rows[:limit]
    events = load_events(directory, [r[:5] for r in page])
    items = [
        failure_view(ev, None if r[5] is None else orjson.loads(r[5]))
        for ev, r in zip(events, page, strict=True)
    ]
    next_cursor = encode_cursor([rows[limit - 1][0]]) if len(rows) > limit else None
    return Page[FailureView](items=items, next_cursor=next_cursor)


def list_events(
    con: sqlite3.Connection,
    directory: Path,
    after: str | None,
    limit: int,
    filters: dict[str, str | None],
) -> Page[EventView]:
    """In gid order, which is commit order here: every batch commits in one SQLite write
    transaction, one at a time across processes (the directory's write lock, SQLite's
    own), and takes the next rowids, so a reader's snapshot always holds a prefix of gids
    and a cursor can never pass over an event that commits later. The cursor is the gid
    of the page's last event (``after`` itself on an empty page)."""
    where: list[str] = ["gid > ?"]
    args: list[Any] = [0]
    if after is not None:
        decoded = decode_event_cursor(after)
        if not isinstance(decoded, int):  # a position vector: PostgreSQL issued it
            raise InvalidCursor("cursor is not one this store issued")
        args[0] = decoded
    given = {column: value for column, value in filters.items() if value is not None}
    kind = next((k for k in spans.KINDS if k in given), None)
    if kind is not None:  # the most selective spanned filter's spans
        value = given.pop(kind)
        sql = spans.events_sql(EVENT_COLS, kind, list(given))
        args = [value, args[0], args[0], *given.values()]
    else:
        where += [f"{column} = ?" for column in given]
        args += given.values()
        sql = f"SELECT {EVENT_COLS} FROM events WHERE {' AND '.join(where)} ORDER BY gid LIMIT ?"
    rows = con.execute(sql, (*args, limit + 1)).fetchall()
    page = rows[:limit]
    if not page:
        return Page[EventView](items=[], next_cursor=None, position=after or encode_cursor([0]))
    items = [e.view() for e in load_events(directory, page)]
    here = encode_cursor([page[-1][0]])
    return Page[EventView](
        items=items, next_cursor=here if len(rows) > limit else None, position=here
    )


# A list of ids as one JSON parameter: one statement whatever their number (no
# host-parameter limit to chunk under), each id a probe of the index it meets.
_EACH = "(SELECT value FROM json_each(?))"


Links = tuple[list[str], list[str], list[str]]  # depends on, dependents, attempts


def _task_links(con: sqlite3.Connection, task_ids: Sequence[str]) -> dict[str, Links]:
    """Dependencies, dependents and attempts of many tasks, in two statements."""
    links: dict[str, Links] = {t: ([], [], []) for t in task_ids}
    ids = orjson.dumps(list(task_ids)).decode()
    for src, dst in con.execute(
        f"SELECT src, dst FROM edges WHERE type = ? AND src_type = ? AND src IN {_EACH} "
        "AND dst_type = ?",
        (DEPENDS_ON, TASK, ids, TASK),
    ):
        links[src][0].append(dst)
    for src_type, src, dst in con.execute(
        # by destination (its index: one probe per task); without INDEXED BY SQLite takes a
        # range of the primary key on (type, src_type), every DEPENDS_ON edge of attempts
        f"SELECT src_type, src, dst FROM edges INDEXED BY edges_dst "
        f"WHERE dst_type = ? AND dst IN {_EACH} "
        "AND type = ? AND src_type IN (?, ?)",
        (TASK, ids, DEPENDS_ON, TASK, ATTEMPT),
    ):
        links[dst][1 if src_type == TASK else 2].append(src)
    return links


def _attempts(con: sqlite3.Connection, ids: Sequence[str]) -> dict[str, AttemptSummary]:
    rows = con.execute(
        f"SELECT id, vals FROM nodes WHERE type = ? AND id IN {_EACH}",
        (ATTEMPT, orjson.dumps(list(dict.fromkeys(ids))).decode()),
    )
    return {node_id: attempt_summary(node_id, orjson.loads(vals)) for node_id, vals in rows}


def _latest_statuses(con: sqlite3.Connection, links: dict[str, Links]) -> dict[str, str | None]:
    """Each task's latest attempt status from two properties of its attempts (a list
    shows no more of them: decoding and modelling whole attempts cost ten times this)."""
    ids = orjson.dumps(list(dict.fromkeys(a for link in links.values() for a in link[2])))
    # two paths: one parse of the properties, [status, last_seen] as a JSON array
    props = {
        node_id: orjson.loads(pair)
        for node_id, pair in con.execute(
            f"SELECT id, json_extract(vals, '$.status', ?) FROM nodes "
            f"WHERE type = ? AND id IN {_EACH}",
            (f"$.{LAST_SEEN}", ATTEMPT, ids.decode()),
        )
    }
    return {
        task_id: latest_status([(a, *props[a]) for a in link[2] if a in props])
        for task_id, link in links.items()
    }


def task_summaries(
    con: sqlite3.Connection, tasks: Sequence[tuple[str, dict[str, Any]]]
) -> list[tuple[TaskSummary, list[AttemptSummary]]]:
    """Summaries and attempts (newest first) of ``(task_id, props)`` pairs in a bounded
    number of statements (three, whatever their number)."""
    links = _task_links(con, [t for t, _ in tasks])
    by_id = _attempts(con, [a for link in links.values() for a in link[2]])
    out = []
    for task_id, props in tasks:
        deps, dependents, attempt_ids = links[task_id]
        mine = newest_first(by_id[a] for a in attempt_ids if a in by_id)
        summary = task_summary(
            task_id,
            props,
            depends_on=deps,
            dependents=dependents,
            latest_attempt_status=mine[0].status if mine else None,
        )
        out.append((summary, mine))
    return out


def list_tasks(
    con: sqlite3.Connection,
    target: str | None,
    status: str | None,
    limit: int,
    cursor: str | None = None,
) -> Page[TaskSummary]:
    rows, next_cursor = _newest_nodes(con, TASK, target, status, limit, cursor)
    links = _task_links(con, [t for t, _ in rows])
    latest = _latest_statuses(con, links)
    items = [
        task_summary(
            task_id,
            props,
            depends_on=links[task_id][0],
            dependents=links[task_id][1],
            latest_attempt_status=latest[task_id],
        )
        for task_id, props in rows
    ]
    return Page[TaskSummary](items=items, next_cursor=next_cursor)


def get_task(con: sqlite3.Connection, task_id: str) -> TaskDetail | None:
    props = node_props(con, TASK, task_id)
    if props is None:
        return None
    [(summary, attempts)] = task_summaries(con, [(task_id, props)])
    return TaskDetail(task=summary, task_node=node_view(TASK, task_id, props), attempts=attempts)


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
