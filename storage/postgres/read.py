"""Read side of the PostgreSQL backend: the query API's views in index-backed SQL.

Pipeline position: :class:`storage.postgres.store.PostgresStore` calls these with a pooled
connection for the ingest tier's query API. Views are built with :mod:`storage.readside`
so both backends present identical shapes; listings use keyset pagination, never OFFSET.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from storage.base import StoredEvent
from storage.projection import ARTIFACT, ATTEMPT, DEPENDS_ON, PRODUCED, TASK
from storage.readside import (
    FAILURE_TYPES_SQL,
    InvalidCursor,
    artifact_nodes,
    attempt_node,
    attempt_summary,
    decode_cursor,
    encode_cursor,
    failure_view,
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


async def list_attempts(
    con: asyncpg.Connection, target: str | None, status: str | None, limit: int, cursor: str | None
) -> Page[AttemptSummary]:
    where, args = ["type = $1"], [ATTEMPT]
    for column, value in (("target", target), ("status", status)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if cursor is not None:
        seen, after_id = decode_cursor(cursor, 2)
        if not isinstance(seen, str) or not isinstance(after_id, str):
            raise InvalidCursor("cursor is not one this service issued")
        args += [str(seen), str(after_id)]
        where.append(f"(last_seen < ${len(args) - 1} OR (last_seen = ${len(args) - 1} "
                     f"AND id > ${len(args)}))")  # fmt: skip
    rows = await con.fetch(
        f"SELECT id, vals, last_seen FROM nodes WHERE {' AND '.join(where)} "
        f"ORDER BY last_seen DESC, id ASC LIMIT {int(limit) + 1}",
        *args,
    )
    items = [attempt_summary(r["id"], r["vals"]) for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = None if last is None else encode_cursor([last["last_seen"], last["id"]])
    return Page[AttemptSummary](items=items, next_cursor=next_cursor)


async def get_attempt(con: asyncpg.Connection, attempt_id: str) -> AttemptDetail | None:
    props = await node_props(con, ATTEMPT, attempt_id)
    if props is None:
        return None
    rows = await con.fetch(
        f"SELECT {EVENT_COLS} FROM events WHERE attempt_id = $1 ORDER BY gid", attempt_id
    )
    events = [to_event(r) for r in rows]
    produced = await con.fetch(
        "SELECT n.id, n.vals FROM edges e JOIN nodes n ON n.type = e.dst_type AND n.id = e.dst "
        "WHERE e.type = $1 AND e.src_type = $2 AND e.src = $3 AND e.dst_type = $4 ORDER BY n.id",
        PRODUCED, ATTEMPT, attempt_id, ARTIFACT,
    )  # fmt: skip
    bundle_rows = [
        {**dict(a), "attempt_id": attempt_id}
        for a in await con.fetch(
            "SELECT artifact_id, sha256, kind, uri, size, bundle_id FROM artifacts "
            "WHERE attempt_id = $1 ORDER BY rid",
            attempt_id,
        )
    ]
    return AttemptDetail(
        attempt_node=attempt_node(attempt_id, props, events),
        events=[e.view() for e in events],
        artifacts=artifact_nodes([(r["id"], r["vals"]) for r in produced], bundle_rows),
    )


async def list_failures(
    con: asyncpg.Connection, target: str | None, limit: int
) -> list[FailureView]:
    sql = f"SELECT {EVENT_COLS} FROM events WHERE {FAILURE_TYPES_SQL}"
    args: list[Any] = [limit]
    if target is not None:
        sql += " AND target = $2"
        args.append(target)
    failures = []
    for r in await con.fetch(sql + " ORDER BY gid DESC LIMIT $1", *args):
        ev = to_event(r)
        attempt = await node_props(con, ATTEMPT, ev.attempt_id) if ev.attempt_id else None
        failures.append(failure_view(ev, attempt))
    return failures


async def list_events(
    con: asyncpg.Connection, after: str | None, limit: int, filters: dict[str, str | None]
) -> Page[EventView]:
    where: list[str] = ["TRUE"]
    args: list[Any] = []
    if after is not None:
        (gid,) = decode_cursor(after, 1)
        if not isinstance(gid, int) or isinstance(gid, bool):
            raise InvalidCursor("cursor is not one this service issued")
        args.append(gid)
        where.append(f"gid > ${len(args)}")
    for column, value in filters.items():
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    rows = await con.fetch(
        f"SELECT {EVENT_COLS} FROM events WHERE {' AND '.join(where)} "
        f"ORDER BY gid LIMIT {int(limit) + 1}",
        *args,
    )
    next_cursor = encode_cursor([rows[limit - 1]["gid"]]) if len(rows) > limit else None
    items = [to_event(r).view() for r in rows[:limit]]
    return Page[EventView](items=items, next_cursor=next_cursor)


@dataclass(slots=True)
class _Links:
    depends_on: list[str] = field(default_factory=list)
    dependents: list[str] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)


async def _task_links(con: asyncpg.Connection, task_ids: list[str]) -> dict[str, _Links]:
    """Dependencies, dependents and attempts of many tasks in two queries."""
    links = {t: _Links() for t in task_ids}
    out = await con.fetch(
        "SELECT src, dst FROM edges WHERE type = $1 AND src_type = $2 AND dst_type = $2 "
        "AND src = ANY($3::text[])",
        DEPENDS_ON, TASK, task_ids,
    )  # fmt: skip
    for r in out:
        links[r["src"]].depends_on.append(r["dst"])
    incoming = await con.fetch(
        "SELECT src_type, src, dst FROM edges WHERE type = $1 AND dst_type = $2 "
        "AND dst = ANY($3::text[]) AND src_type IN ($2, $4)",
        DEPENDS_ON, TASK, task_ids, ATTEMPT,
    )  # fmt: skip
    for r in incoming:
        link = links[r["dst"]]
        (link.dependents if r["src_type"] == TASK else link.attempts).append(r["src"])
    return links


async def _attempts(con: asyncpg.Connection, ids: list[str]) -> list[AttemptSummary]:
    rows = await con.fetch(
        "SELECT id, vals FROM nodes WHERE type = $1 AND id = ANY($2::text[])", ATTEMPT, ids
    )
    summaries = [attempt_summary(r["id"], r["vals"]) for r in rows]
    return sorted(summaries, key=lambda s: (s.timestamp or "", s.attempt_id), reverse=True)


async def task_summaries(
    con: asyncpg.Connection, tasks: list[tuple[str, dict[str, Any]]]
) -> list[tuple[TaskSummary, list[AttemptSummary]]]:
    """Summaries (and attempts, newest first) of ``(task_id, props)`` pairs: four queries in
    all, whatever their number."""
    links = await _task_links(con, [t for t, _ in tasks])
    every = await _attempts(con, [a for link in links.values() for a in link.attempts])
    by_id = {a.attempt_id: a for a in every}
    out = []
    for task_id, props in tasks:
        link = links[task_id]
        mine = [by_id[a] for a in link.attempts if a in by_id]
        mine.sort(key=lambda s: (s.timestamp or "", s.attempt_id), reverse=True)
        summary = task_summary(
            task_id,
            props,
            depends_on=link.depends_on,
            dependents=link.dependents,
            latest_attempt_status=mine[0].status if mine else None,
        )
        out.append((summary, mine))
    return out


async def list_tasks(
    con: asyncpg.Connection, target: str | None, status: str | None, limit: int
) -> list[TaskSummary]:
    where, args = ["type = $1"], [TASK]
    for column, value in (("target", target), ("status", status)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    rows = await con.fetch(
        f"SELECT id, vals FROM nodes WHERE {' AND '.join(where)} ORDER BY id LIMIT {int(limit)}",
        *args,
    )
    return [s for s, _ in await task_summaries(con, [(r["id"], r["vals"]) for r in rows])]


async def get_task(con: asyncpg.Connection, task_id: str) -> TaskDetail | None:
    props = await node_props(con, TASK, task_id)
    if props is None:
        return None
    [(summary, attempts)] = await task_summaries(con, [(task_id, props)])
    return TaskDetail(task=summary, task_node=node_view(TASK, task_id, props), attempts=attempts)


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
