"""Graph merge of the PostgreSQL backend: a fold's delta joined into nodes and edges.

Pipeline position: :func:`storage.pg_write.write_batch` calls :func:`merge_graph` with the
fold of each batch's new events, inside the batch's transaction (DESIGN §4: graph upserts
in the same transaction as the events); ``rebuild_graph`` calls it with the fold of the
whole log. Three statements per batch (data-modifying CTEs), whatever its size; the
properties are merged in Python by :func:`storage.projection.merge_props`, the one
definition both backends share.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from storage.projection import (
    LAST_SEEN,
    Graph,
    NodeKey,
    merge_props,
    props_from_json,
    props_to_json,
)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _opt(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def node_columns(key: NodeKey, values: dict[str, Any]) -> tuple[Any, ...]:
    """The filter/sort columns the query API uses, extracted from a node's values."""
    target = values.get("target") or values.get("target_id")
    last_seen = values.get(LAST_SEEN)
    return (
        None if target is None else str(target),
        _opt(values.get("status")),
        last_seen if isinstance(last_seen, str) else "",
        _opt(values.get("task_id")),
    )


# Data-modifying CTEs run to completion whether or not the outer SELECT reads them, so
# each of these is one round trip for what were three statements.
INSERT_NODES = """
WITH ins AS (
    INSERT INTO nodes(type, id, vals, vers)
    SELECT t, i, '{}', '{}' FROM unnest($1::text[], $2::text[]) AS u(t, i) ORDER BY t, i
    ON CONFLICT (type, id) DO NOTHING RETURNING type, id
), counted AS (
    INSERT INTO graph_counts(partition, kind, type, n)
    SELECT $3, 'node', type, count(*) FROM ins GROUP BY type
    ON CONFLICT (partition, kind, type) DO UPDATE SET n = graph_counts.n + excluded.n
), head AS (
    INSERT INTO heads(partition, seq, hash) SELECT $3, $4, $5 WHERE $4::bigint IS NOT NULL
    ON CONFLICT (partition) DO UPDATE SET seq = excluded.seq, hash = excluded.hash
)
SELECT type, id FROM ins
"""
LOCK_NODES = """
SELECT n.type, n.id, n.vals, n.vers FROM nodes n
JOIN unnest($1::text[], $2::text[]) AS u(t, i) ON n.type = u.t AND n.id = u.i
ORDER BY n.type, n.id FOR UPDATE OF n
"""
UPDATE_NODES_INSERT_EDGES = """
WITH upd AS (
    UPDATE nodes SET vals = u.v::jsonb, vers = u.r::jsonb, target = u.tg, status = u.st,
        last_seen = u.ls, task_id = u.tk
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[]) AS u(t, i, v, r, tg, st, ls, tk)
    WHERE nodes.type = u.t AND nodes.id = u.i
), added AS (
    INSERT INTO edges SELECT * FROM unnest($9::text[], $10::text[], $11::text[], $12::text[],
                                           $13::text[])
    ON CONFLICT DO NOTHING RETURNING type
), counted AS (
    INSERT INTO graph_counts(partition, kind, type, n)
    SELECT $14, 'edge', type, count(*) FROM added GROUP BY type
    ON CONFLICT (partition, kind, type) DO UPDATE SET n = graph_counts.n + excluded.n
)
SELECT 1
"""


async def merge_graph(
    con: asyncpg.Connection, partition: int, delta: Graph, head: tuple[int, str] | None = None
) -> None:
    """Join ``delta`` into the stored graph inside the caller's transaction.

    Missing nodes are first inserted empty (in key order, so concurrent writers lock rows
    in the same order and cannot deadlock), then every affected row is locked and read
    with ``FOR UPDATE`` in a second statement (the first one's snapshot could miss a row a
    concurrent writer just committed): a concurrent writer's committed properties are
    never overwritten. ``head`` (seq, hash of the batch's last event) becomes the
    partition's chain head.
    """
    keys = sorted(delta.nodes)
    types, ids = [k[0] for k in keys], [k[1] for k in keys]
    created = await con.fetch(INSERT_NODES, types, ids, partition, *(head or (None, None)))
    # Rows this transaction just inserted are empty and already ours (nobody else can
    # touch them before we commit): only the nodes that existed need reading and locking.
    new = {(r["type"], r["id"]) for r in created}
    older = [k for k in keys if k not in new]
    stored = {}
    if older:
        rows = await con.fetch(LOCK_NODES, [k[0] for k in older], [k[1] for k in older])
        stored = {(r["type"], r["id"]): props_from_json(r["vals"], r["vers"]) for r in rows}
    columns: list[list[Any]] = [[] for _ in range(8)]
    for key in keys:
        values, versions = props_to_json(merge_props(stored.get(key), delta.nodes[key]))
        row = (*key, _json(values), _json(versions), *node_columns(key, values))
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    edges = sorted(delta.edges, key=lambda e: (e.type, e.src_type, e.src, e.dst_type, e.dst))
    # one statement for all nodes and edges (arrays, not one round trip per row)
    await con.execute(
        UPDATE_NODES_INSERT_EDGES, *columns,
        [e.type for e in edges], [e.src_type for e in edges], [e.src for e in edges],
        [e.dst_type for e in edges], [e.dst for e in edges], partition,
    )  # fmt: skip
