"""Graph merge of the PostgreSQL backend: a fold's delta joined into nodes and edges.

Pipeline position: :func:`storage.postgres.write.write_batch` calls :func:`merge_graph` with the
fold of each batch's new events, inside the batch's transaction (graph upserts
in the same transaction as the events); ``rebuild_graph`` calls it with the fold of the
whole log. One statement per batch when every node is new, three when some existed
(data-modifying CTEs), whatever its size; new nodes are written once, complete; the
properties of existing ones are merged in Python by :func:`storage.projection.merge_props`,
the one definition both backends share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

from storage.projection import (
    LAST_SEEN,
    Graph,
    NodeKey,
    Prop,
    merge_props,
    props_from_json,
    props_to_json,
)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _opt(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _key(value: Any) -> str | None:
    # a payload's "target" may be any JSON value on Target/Artifact nodes: only strings and
    # integers name one (str() of an object could outgrow the index)
    if type(value) is str or type(value) is int:
        return str(value) or None
    return None


def node_columns(key: NodeKey, values: dict[str, Any]) -> tuple[Any, ...]:
    """The filter/sort columns the query API uses, extracted from a node's values."""
    target = _key(values.get("target")) or _key(values.get("target_id"))
    last_seen = values.get(LAST_SEEN)
    return (
        target,
        _opt(values.get("status")),
        last_seen if isinstance(last_seen, str) else "",
        _opt(values.get("task_id")),
    )


# Data-modifying CTEs run to completion whether or not the outer SELECT reads them, so
# each of these is one round trip for what were three statements.
INSERT_NODES_AND_EDGES = """
WITH ins AS (
    INSERT INTO nodes(type, id, vals, vers, target, status, last_seen, task_id)
    SELECT t, i, v::json, r::json, tg, st, ls, tk
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[]) AS u(t, i, v, r, tg, st, ls, tk)
    ORDER BY t, i
    ON CONFLICT (type, id) DO NOTHING RETURNING type, id
), added AS (
    INSERT INTO edges SELECT * FROM unnest($12::text[], $13::text[], $14::text[], $15::text[],
                                           $16::text[])
    ON CONFLICT DO NOTHING RETURNING type
), counted AS (
    INSERT INTO graph_counts(partition, kind, type, n)
    SELECT $9::integer, 'node', type, count(*) FROM ins GROUP BY type
    UNION ALL SELECT $9::integer, 'edge', type, count(*) FROM added GROUP BY type
    ON CONFLICT (partition, kind, type) DO UPDATE SET n = graph_counts.n + excluded.n
), head AS (
    INSERT INTO heads(partition, seq, hash) SELECT $9, $10, $11 WHERE $10::bigint IS NOT NULL
    ON CONFLICT (partition) DO UPDATE SET seq = excluded.seq, hash = excluded.hash
)
SELECT type, id FROM ins
"""
LOCK_NODES = """
SELECT n.type, n.id, n.vals, n.vers FROM nodes n
JOIN unnest($1::text[], $2::text[]) AS u(t, i) ON n.type = u.t AND n.id = u.i
ORDER BY n.type, n.id FOR UPDATE OF n
"""
UPDATE_NODES = """
UPDATE nodes SET vals = u.v::json, vers = u.r::json, target = u.tg, status = u.st,
    last_seen = u.ls, task_id = u.tk
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[]) AS u(t, i, v, r, tg, st, ls, tk)
WHERE nodes.type = u.t AND nodes.id = u.i
"""


async def merge_graph(
    con: asyncpg.Connection, partition: int, delta: Graph, head: tuple[int, str] | None = None
) -> None:
    """Join ``delta`` into the stored graph inside the caller's transaction.

    Missing nodes and all edges are first inserted (in key order, so concurrent writers
    lock rows in the same order), then the nodes that already existed are locked and read
    with ``FOR UPDATE`` in a second statement (the first one's snapshot could miss a row a
    concurrent writer just committed) and updated with the merge: a concurrent writer's
    committed properties are never overwritten. ``head`` (seq, hash of the batch's last
    event) becomes the partition's chain head.
    """
    keys = sorted(delta.nodes)
    edges = sorted(delta.edges, key=lambda e: (e.type, e.src_type, e.src, e.dst_type, e.dst))
    # a node no one stored yet is inserted with its values as built (merge_props(None, p)
    # is p): one write and one set of index entries instead of an empty insert + update;
    # edges carry no properties, so they go in the same statement
    created = await con.fetch(
        INSERT_NODES_AND_EDGES, *_node_columns(keys, delta.nodes), partition,
        *(head or (None, None)), [e.type for e in edges], [e.src_type for e in edges],
        [e.src for e in edges], [e.dst_type for e in edges], [e.dst for e in edges],
    )  # fmt: skip
    # Rows this statement inserted are complete and already ours (nobody else can touch
    # them before we commit): only the nodes that existed need reading, merging, locking.
    new = {(r["type"], r["id"]) for r in created}
    older = [k for k in keys if k not in new]
    if not older:
        return
    rows = await con.fetch(LOCK_NODES, [k[0] for k in older], [k[1] for k in older])
    stored = {(r["type"], r["id"]): props_from_json(r["vals"], r["vers"]) for r in rows}
    merged = {k: merge_props(stored.get(k), delta.nodes[k]) for k in older}
    await con.execute(UPDATE_NODES, *_node_columns(older, merged))


def _node_columns(keys: list[NodeKey], props: Mapping[NodeKey, dict[str, Prop]]) -> list[list[Any]]:
    """Eight parallel arrays (type, id, vals, vers and the query columns) for unnest."""
    columns: list[list[Any]] = [[] for _ in range(8)]
    for key in keys:
        values, versions = props_to_json(props[key])
        row = (*key, _json(values), _json(versions), *node_columns(key, values))
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns
