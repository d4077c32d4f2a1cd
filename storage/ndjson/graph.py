"""Graph and topology tables of the NDJSON index: merged by each batch, read back whole.

Pipeline position: :func:`storage.ndjson.write.write_batch` folds a batch's events
(:func:`storage.projection.fold`) and merges the delta here, inside its SQLite
transaction; :meth:`storage.ndjson.store.NdjsonStore.graph` reads the whole graph back and
``rebuild_graph`` replaces it. A listed node (attempt, task) also keeps its target and
status in plain columns, so the listings' indexes are kept without parsing the properties
on every merge.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from storage.ndjson.read import LISTED_TYPES
from storage.projection import Edge, Graph, NodeKey, Prop, merge_props, props_from_json
from storage.topology import TopoRow

CHUNK = 500  # keeps IN (...) lists under SQLite's host-parameter limit
# (target, status) of a node no listing filters
UNLISTED: tuple[None, None] = (None, None)


def chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def listed_columns(node_type: str, values: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The ``(target, status)`` columns of a node: its ``target`` (else ``target_id``) and
    ``status`` properties when they are strings, for the listed types only. A listing's
    filter is a string, which no other value ever equalled."""
    if node_type not in LISTED_TYPES:
        return UNLISTED
    target = values.get("target")
    if target is None:
        target = values.get("target_id")
    status = values.get("status")
    return (
        target if type(target) is str else None,
        status if type(status) is str else None,
    )


def _stored_columns(node_type: str, props: Mapping[str, Prop]) -> tuple[str | None, str | None]:
    if node_type not in LISTED_TYPES:
        return UNLISTED
    return listed_columns(node_type, {n: props[n].value for n in _LISTED_PROPS if n in props})


_LISTED_PROPS = ("target", "target_id", "status")


def load_nodes(con: sqlite3.Connection, keys: Sequence[NodeKey]) -> dict[NodeKey, dict[str, Prop]]:
    # one query per type and chunk of ids (not one per node: a batch touches hundreds)
    by_type: dict[str, list[str]] = {}
    for node_type, node_id in keys:
        by_type.setdefault(node_type, []).append(node_id)
    found: dict[NodeKey, dict[str, Prop]] = {}
    loads = orjson.loads
    for node_type, ids in by_type.items():
        for part in chunks(ids):
            marks = ",".join("?" * len(part))
            rows = con.execute(
                f"SELECT id, vals, vers FROM nodes WHERE type = ? AND id IN ({marks})",
                (node_type, *part),
            )
            for node_id, vals, vers in rows:
                found[(node_type, node_id)] = props_from_json(loads(vals), loads(vers))
    return found


# The upsert leaves target and status alone: an index is kept only when its columns are
# SET, and most merges (progress, heartbeats) change neither; the few that do are
# updated apart.
_UPSERT_NODE = (
    "INSERT INTO nodes(type, id, vals, vers, target, status) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(type, id) DO UPDATE SET vals = excluded.vals, vers = excluded.vers"
)
_SET_LISTED = "UPDATE nodes SET target = ?, status = ? WHERE type = ? AND id = ?"


def merge_graph(con: sqlite3.Connection, delta: Graph) -> None:
    """Join ``delta`` into the stored graph (inside the caller's transaction), counting
    the nodes and edges it adds in ``graph_counts`` (what the graph summary reads)."""
    keys = list(delta.nodes)
    stored = load_nodes(con, keys)
    rows: list[tuple[str, str, str, str, str | None, str | None]] = []
    changed: list[tuple[str | None, str | None, str, str]] = []
    added: dict[tuple[str, str], int] = {}
    dumps = orjson.dumps
    for key in keys:
        node_type, node_id = key
        old = stored.get(key)
        props = merge_props(old, delta.nodes[key])
        vals = {name: p.value for name, p in props.items()}
        listed = listed_columns(node_type, vals)
        if old is None:
            added[("node", node_type)] = added.get(("node", node_type), 0) + 1
        elif listed != _stored_columns(node_type, old):
            changed.append((*listed, node_type, node_id))
        vers = {name: list(p.version) for name, p in props.items()}
        rows.append((node_type, node_id, dumps(vals).decode(), dumps(vers).decode(), *listed))
    con.executemany(_UPSERT_NODE, rows)
    if changed:
        con.executemany(_SET_LISTED, changed)
    by_type: dict[str, list[tuple[str, str, str, str, str]]] = {}
    for e in delta.edges:
        by_type.setdefault(e.type, []).append((e.type, e.src_type, e.src, e.dst_type, e.dst))
    for edge_type, edges in by_type.items():
        cur = con.executemany("INSERT OR IGNORE INTO edges VALUES (?, ?, ?, ?, ?)", edges)
        if cur.rowcount > 0:
            added[("edge", edge_type)] = cur.rowcount
    if added:
        con.executemany(
            "INSERT INTO graph_counts(kind, type, n) VALUES (?, ?, ?) "
            "ON CONFLICT(kind, type) DO UPDATE SET n = n + excluded.n",
            [(kind, type_, n) for (kind, type_), n in added.items()],
        )


def replace_graph(con: sqlite3.Connection, graph: Graph) -> None:
    con.execute("DELETE FROM nodes")
    con.execute("DELETE FROM edges")
    con.execute("DELETE FROM graph_counts")
    merge_graph(con, graph)


def read_graph(con: sqlite3.Connection) -> Graph:
    graph = Graph()
    for node_type, node_id, vals, vers in con.execute("SELECT type, id, vals, vers FROM nodes"):
        graph.nodes[(node_type, node_id)] = props_from_json(orjson.loads(vals), orjson.loads(vers))
    for row in con.execute("SELECT type, src_type, src, dst_type, dst FROM edges"):
        graph.edges.add(Edge(*row))
    return graph


# SQLite compares TEXT bytewise (BINARY), i.e. by code point like Python: the same order
# as storage.topology's versions, so the row kept is the one TopoRow.version picks.
_UPSERT_TOPOLOGY = """
INSERT INTO topology(target, kind, item, version_ts, event_id, digest, payload)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(target, kind, item) DO UPDATE SET
    version_ts = excluded.version_ts, event_id = excluded.event_id,
    digest = excluded.digest, payload = excluded.payload
WHERE (excluded.version_ts, excluded.event_id, excluded.digest)
    > (topology.version_ts, topology.event_id, topology.digest)
"""


def merge_topology(con: sqlite3.Connection, rows: Sequence[TopoRow]) -> None:
    """Keep, per topology item, the newest of the stored row and ``rows`` (in the
    caller's transaction)."""
    if rows:
        con.executemany(
            _UPSERT_TOPOLOGY,
            [(r.target, r.kind, r.item, r.version_ts, r.event_id, r.digest,
              orjson.dumps(r.payload).decode()) for r in rows],
        )  # fmt: skip
