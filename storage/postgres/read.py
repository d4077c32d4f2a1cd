"""Read side of the PostgreSQL backend: the query API's views in index-backed SQL.

Pipeline position: :class:`storage.postgres.store.PostgresStore` calls these with a pooled
connection for the ingest tier's query API. Views are built with :mod:`storage.readside`
so both backends present identical shapes; listings use keyset pagination, never OFFSET.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from storage.base import StoredEvent
from storage.projection import ARTIFACT, ATTEMPT, DEPENDS_ON, PRODUCED, TASK
from storage.readside import (
    FAILURE_TYPES_SQL,
    advance,
    artifact_nodes,
    attempt_node,
    attempt_summary,
    decode_event_cursor,
    decode_key_cursor,
    encode_cursor,
    encode_event_cursor,
    failure_view,
    newest_first,
    node_view,
    recent_event,
    task_summary,
)
from storage.views import (
    AttemptDetail,
    AttemptSummary,
    EventView,
    FailureView,
    GraphSummary,
    Page,
    TaskDetail,
    TaskSummary,
)

EVENT_COLS = (
    "gid, event_id, event_type, ts_text, actor_id, payload, bundle_id, target, received_at, "
    "partition, seq, prev_hash, hash, revision, digest"
)


def to_event(r: asyncpg.Record) -> StoredEvent:
    return StoredEvent(
        r["event_id"], r["event_type"], r["ts_text"], r["actor_id"], r["payload"],
        r["bundle_id"], r["target"], r["received_at"], r["partition"], r["seq"],
        r["prev_hash"], r["hash"], r["revision"], r["digest"],
    )  # fmt: skip


async def node_props(con: asyncpg.Connection, node_type: str, node_id: str) -> Any:
    return await con.fetchval(
        "SELECT vals FROM nodes WHERE type = $1 AND id = $2", node_type, node_id
    )


def _node_filters(node_type: str, target: str | None, status: str | None) -> tuple[str, list[Any]]:
    where, args = ["type = $1"], [node_type]
    for column, value in (("target", target), ("status", status)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    return " AND ".join(where), args


async def _newest_nodes(
    con: asyncpg.Connection,
    node_type: str,
    target: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[asyncpg.Record], str | None]:
    """Nodes of a type, newest first by ``nid`` (drawn once at insert: pages neither skip
    nor repeat a node while writers update them), ``limit + 1`` fetched for the cursor."""
    where, args = _node_filters(node_type, target, status)
    if cursor is not None:
        args.append(decode_key_cursor(cursor))
        where += f" AND nid < ${len(args)}"
    rows = await con.fetch(
        f"SELECT id, vals, nid FROM nodes WHERE {where} ORDER BY nid DESC LIMIT {int(limit) + 1}",
        *args,
    )
    next_cursor = encode_cursor([rows[limit - 1]["nid"]]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def list_attempts(
    con: asyncpg.Connection, target: str | None, status: str | None, limit: int, cursor: str | None
) -> Page[AttemptSummary]:
    rows, next_cursor = await _newest_nodes(con, ATTEMPT, target, status, limit, cursor)
    items = [attempt_summary(r["id"], r["vals"]) for r in rows]
    return Page[AttemptSummary](items=items, next_cursor=next_cursor)


# An attempt node with its artifacts — the artifact nodes it produced, the bundle
# artifacts that name it — in one statement (primary-key probes and index ranges).
ATTEMPT_NODE = f"""
SELECT n.vals,
    ARRAY(SELECT jsonb_build_array(p.id, p.vals) FROM edges e
          JOIN nodes p ON p.type = e.dst_type AND p.id = e.dst
          WHERE e.type = '{PRODUCED}' AND e.src_type = '{ATTEMPT}' AND e.src = n.id
          AND e.dst_type = '{ARTIFACT}' ORDER BY p.id) AS produced,
    ARRAY(SELECT jsonb_build_array(artifact_id, sha256, kind, uri, size, bundle_id)
          FROM artifacts WHERE attempt_id = n.id ORDER BY rid) AS bundled
FROM nodes n WHERE n.type = '{ATTEMPT}' AND n.id = $1
"""
_BUNDLED = ("artifact_id", "sha256", "kind", "uri", "size", "bundle_id")


async def get_attempt(con: asyncpg.Connection, attempt_id: str) -> AttemptDetail | None:
    node = await con.fetchrow(ATTEMPT_NODE, attempt_id)
    if node is None:
        return None
    rows = await con.fetch(
        f"SELECT {EVENT_COLS} FROM events WHERE attempt_id = $1 ORDER BY gid", attempt_id
    )
    events = [to_event(r) for r in rows]
    bundle_rows = [
        {**dict(zip(_BUNDLED, a, strict=True)), "attempt_id": attempt_id} for a in node["bundled"]
    ]
    return AttemptDetail(
        attempt_node=attempt_node(attempt_id, node["vals"], events),
        events=[e.view() for e in events],
        artifacts=artifact_nodes([(p[0], p[1]) for p in node["produced"]], bundle_rows),
    )


# The failure events newest first with their attempt nodes, in one statement: a range of
# the partial index on gid (with ``target`` a filter on it), then one primary-key probe
# per row returned (a subquery per row: a join could hash the whole nodes table).
FAILURES_PAGE = """
SELECT {cols},
    (SELECT n.vals FROM nodes n WHERE n.type = 'Attempt' AND n.id = e.attempt_id) AS attempt_vals
FROM events e
WHERE e.{failures}{filters} ORDER BY e.gid DESC LIMIT $1
"""


async def list_failures(
    con: asyncpg.Connection, target: str | None, limit: int, cursor: str | None = None
) -> Page[FailureView]:
    args: list[Any] = [int(limit) + 1]
    where = ""
    if target is not None:
        args.append(target)
        where += f" AND e.target = ${len(args)}"
    if cursor is not None:
        args.append(decode_key_cursor(cursor))
        where += f" AND e.gid < ${len(args)}"
    cols = ", ".join(f"e.{c.strip()}" for c in EVENT_COLS.split(","))
    sql = FAILURES_PAGE.format(cols=cols, failures=FAILURE_TYPES_SQL, filters=where)
    rows = await con.fetch(sql, *args)
    items = [failure_view(to_event(r), r["attempt_vals"]) for r in rows[:limit]]
    next_cursor = encode_cursor([rows[limit - 1]["gid"]]) if len(rows) > limit else None
    return Page[FailureView](items=items, next_cursor=next_cursor)


# One statement, one snapshot: per partition (every partition that has a chain head) the
# first ``limit`` events past its position in seq order (an index range of
# ``(partition, seq) INCLUDE (gid)``, or ``(column, partition, seq)`` with a filter), then
# the ``limit`` lowest gids of those, read whole. A partition's events commit in seq order
# (its writers hold its advisory lock until commit), so the events a snapshot shows of a
# partition are always a prefix of its seq order: a position vector never passes over an
# event that commits later, whatever order the partitions commit in.
EVENTS_PAGE = """
WITH pos AS (
    SELECT h.partition AS p, COALESCE(c.s, 0) AS s
    FROM heads h LEFT JOIN unnest($1::integer[], $2::bigint[]) AS c(p, s) ON c.p = h.partition
), picked AS (
    SELECT e.gid FROM pos CROSS JOIN LATERAL (
        SELECT gid FROM events WHERE partition = pos.p AND seq > pos.s{filters}
        ORDER BY seq LIMIT $3
    ) AS e
    ORDER BY e.gid LIMIT $3
)
SELECT {cols} FROM events WHERE gid IN (SELECT gid FROM picked) ORDER BY gid
"""

# Where a cursor of the gid era stood, as positions: per partition the seq of its last
# event at or below that gid (a walk back along the primary key from that gid to the
# partition's nearest event; partitions interleave, so usually a few rows).
POSITIONS_AT_GID = """
SELECT h.partition, COALESCE((SELECT seq FROM events WHERE partition = h.partition
                              AND gid <= $1 ORDER BY gid DESC LIMIT 1), 0) AS seq
FROM heads h
"""


async def list_events(
    con: asyncpg.Connection, after: str | None, limit: int, filters: dict[str, str | None]
) -> Page[EventView]:
    """Events in commit order per partition, merged by insertion number. ``position`` is
    the position vector after the page's last event (the one given, on an empty page);
    ``next_cursor`` is the same while more events follow, None once the log is read."""
    positions: dict[int, int] = {}
    if after is not None:
        decoded = decode_event_cursor(after)
        if isinstance(decoded, int):  # issued before positions: where that gid stood
            rows = await con.fetch(POSITIONS_AT_GID, decoded)
            positions = {r["partition"]: r["seq"] for r in rows}
        else:
            positions = decoded
    args: list[Any] = [list(positions), list(positions.values()), int(limit) + 1]
    where = ""
    for column, value in filters.items():
        if value is not None:
            args.append(value)
            where += f" AND {column} = ${len(args)}"
    rows = await con.fetch(EVENTS_PAGE.format(filters=where, cols=EVENT_COLS), *args)
    page = rows[:limit]
    if not page:
        here = after or encode_event_cursor(positions)
        return Page[EventView](items=[], next_cursor=None, position=here)
    moved = encode_event_cursor(advance(positions, [(r["partition"], r["seq"]) for r in page]))
    items = [to_event(r).view() for r in page]
    more = moved if len(rows) > limit else None
    return Page[EventView](items=items, next_cursor=more, position=moved)


# Tasks with their links in one statement: the page of task nodes (a range of the
# ``(type, …, nid)`` indexes), then per task three probes of the edge indexes — its
# dependencies (primary key), its dependents and its attempts (``edges_dst_idx``) — with
# each attempt's node by primary key. Under load every round trip of a read waits its turn
# on the event loop again: four statements made the task list the slowest read.
TASKS_PAGE = """
WITH page AS (
    SELECT id, vals, nid FROM nodes WHERE {where} ORDER BY nid DESC LIMIT {limit}
)
SELECT p.id, p.vals, p.nid,
    ARRAY(SELECT e.dst FROM edges e WHERE e.type = '{dep}' AND e.src_type = '{task}'
          AND e.src = p.id AND e.dst_type = '{task}') AS depends_on,
    ARRAY(SELECT e.src FROM edges e WHERE e.type = '{dep}' AND e.dst_type = '{task}'
          AND e.dst = p.id AND e.src_type = '{task}') AS dependents,
    {attempts}
FROM page p ORDER BY p.nid DESC
"""
_ATTEMPTS_OF_TASK = f"""FROM edges e JOIN nodes a ON a.type = '{ATTEMPT}' AND a.id = e.src
          WHERE e.type = '{DEPENDS_ON}' AND e.dst_type = '{TASK}' AND e.dst = p.id
          AND e.src_type = '{ATTEMPT}'"""
# A task's page shows its attempts whole.
_WHOLE = f"ARRAY(SELECT jsonb_build_array(a.id, a.vals) {_ATTEMPTS_OF_TASK}) AS attempts"
# A list shows each task's latest attempt status only: chosen here, in the order
# readside.newest_first lists attempts (the shown time, short form when the microseconds
# are zero, then the id; code point order like Python's, whatever the database's
# collation), from the node's status and last_seen columns, which the merge keeps equal
# to its properties. Reading five attempts' JSON per task and choosing in Python was
# half of the list's time.
_LATEST = f"""(SELECT a.status {_ATTEMPTS_OF_TASK}
          ORDER BY replace(a.last_seen, '.000000Z', 'Z') COLLATE "C" DESC,
                   a.id COLLATE "C" DESC LIMIT 1) AS latest"""


def _tasks_sql(where: str, limit: int, attempts: str) -> str:
    return TASKS_PAGE.format(
        where=where, limit=int(limit), attempts=attempts, dep=DEPENDS_ON, task=TASK
    )


def _summary(r: asyncpg.Record, latest: str | None) -> TaskSummary:
    return task_summary(
        r["id"],
        r["vals"],
        depends_on=r["depends_on"],
        dependents=r["dependents"],
        latest_attempt_status=latest,
    )


async def list_tasks(
    con: asyncpg.Connection,
    target: str | None,
    status: str | None,
    limit: int,
    cursor: str | None = None,
) -> Page[TaskSummary]:
    """Tasks newest first by ``nid`` (as attempts), each with its latest attempt's status."""
    where, args = _node_filters(TASK, target, status)
    if cursor is not None:
        args.append(decode_key_cursor(cursor))
        where += f" AND nid < ${len(args)}"
    rows = await con.fetch(_tasks_sql(where, limit + 1, _LATEST), *args)
    next_cursor = encode_cursor([rows[limit - 1]["nid"]]) if len(rows) > limit else None
    items = [_summary(r, r["latest"]) for r in rows[:limit]]
    return Page[TaskSummary](items=items, next_cursor=next_cursor)


async def get_task(con: asyncpg.Connection, task_id: str) -> TaskDetail | None:
    row = await con.fetchrow(_tasks_sql("type = $1 AND id = $2", 1, _WHOLE), TASK, task_id)
    if row is None:
        return None
    attempts = newest_first(attempt_summary(a[0], a[1]) for a in row["attempts"])
    return TaskDetail(
        task=_summary(row, attempts[0].status if attempts else None),
        task_node=node_view(TASK, task_id, row["vals"]),
        attempts=attempts,
    )


async def graph_summary(con: asyncpg.Connection, recent: int) -> GraphSummary:
    """Node/edge counts (summed over the per-partition counters) and the newest events."""
    counts = await con.fetch(
        "SELECT kind, type, sum(n)::bigint AS n FROM graph_counts GROUP BY kind, type"
    )
    rows = await con.fetch(f"SELECT {EVENT_COLS} FROM events ORDER BY gid DESC LIMIT $1", recent)
    events = [to_event(r) for r in rows]
    return GraphSummary(
        nodes_by_type={r["type"]: r["n"] for r in counts if r["kind"] == "node" and r["n"]},
        edges_by_type={r["type"]: r["n"] for r in counts if r["kind"] == "edge" and r["n"]},
        recent_events=[recent_event(e) for e in events],
    )
