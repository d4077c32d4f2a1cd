"""Write path of the PostgreSQL backend: dedup, chain, COPY insert, graph merge, artifacts.

Pipeline position: :meth:`storage.postgres.PostgresStore.write_batch` runs
:func:`write_batch` inside ONE transaction per consumer batch. The chain of a partition is
serialised by a transaction-scoped advisory lock keyed on the partition (writers of other
partitions proceed in parallel). Duplicates and conflicts are decided in Python against
the stored digests, then the new rows are COPYed straight into ``events`` (see
docs/design-notes.md, "PostgreSQL write path"). If a writer of another partition stored
one of our event_ids meanwhile, the unique index fails the COPY: :class:`RaceLost` rolls
the transaction back and the caller retries, now seeing that event as duplicate/conflict.
The ``payload`` column (json, migration 0002) holds the exact bytes the chain hashed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from storage.base import BatchResult, Conflict, StoredEvent
from storage.chain import GENESIS_HASH, digest_bytes, link_bytes, payload_json
from storage.envelope import Envelope
from storage.projection import (
    LAST_SEEN,
    Graph,
    NodeKey,
    fold,
    merge_props,
    props_from_json,
    props_to_json,
)
from storage.schema import Bundle, format_timestamp

# Class id of the two-key advisory locks ("LVTW"); the second key is the partition.
WRITE_LOCK_CLASS = 0x4C565457

# Columns of events written by COPY (gid comes from its sequence).
STAGE_COLUMNS = [
    "partition", "seq", "event_id", "event_type", "ts", "ts_text", "actor_id", "payload",
    "bundle_id", "target", "received_at", "prev_hash", "hash", "digest", "task_id",
    "attempt_id",
]  # fmt: skip


class RaceLost(Exception):
    """Another partition's writer stored one of this batch's event_ids concurrently."""


@dataclass(slots=True)
class Plan:
    events: list[StoredEvent] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)


def _opt(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def plan(
    partition: int, envelopes: Sequence[Envelope], known: dict[str, str], seq: int, prev: str
) -> Plan:
    """Dedup against ``known`` (event_id → digest) and link the new events.

    Each payload is serialised once (at decode, else here); the chain link, the digest and
    the stored ``payload`` column all use those bytes, so verify re-reads exactly what was
    hashed.
    """
    out = Plan()
    events, rows = out.events, out.rows
    for env in envelopes:
        bundle = env.bundle
        bundle_id, target = bundle.bundle_id, bundle.target
        received = format_timestamp(_epoch(env.received_at))
        payloads = env.payloads or [payload_json(ev.payload) for ev in bundle.events]
        for ev, pbytes in zip(bundle.events, payloads, strict=True):
            event_id, event_type, actor_id = ev.event_id, ev.event_type, ev.actor_id
            ts_text = format_timestamp(ev.timestamp)
            digest = digest_bytes(
                event_type=event_type, timestamp=ts_text, actor_id=actor_id, payload_bytes=pbytes
            )
            stored = known.get(event_id)
            if stored == digest:
                out.duplicates += 1
                continue
            if stored is not None:
                out.conflicts.append(
                    Conflict(event_id, env.entry_id, bundle_id, target,
                             ev.model_dump(mode="json"), stored, digest)
                )  # fmt: skip
                continue
            known[event_id] = digest  # later copies in this batch dedup against it
            seq += 1
            hash_ = link_bytes(
                event_id=event_id, event_type=event_type, timestamp=ts_text,
                actor_id=actor_id, payload_bytes=pbytes, prev_hash=prev,
            )  # fmt: skip
            stored_ev = StoredEvent(
                event_id, event_type, ts_text, actor_id, ev.payload, bundle_id, target,
                received, partition, seq, prev, hash_,
            )  # fmt: skip
            events.append(stored_ev)
            rows.append(
                (partition, seq, event_id, event_type, ev.timestamp, ts_text, actor_id,
                 pbytes, bundle_id, target, received,
                 prev, hash_, digest, stored_ev.task_id, stored_ev.attempt_id)
            )  # fmt: skip
            prev = hash_
    return out


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _epoch(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


async def _known_digests(con: asyncpg.Connection, envelopes: Sequence[Envelope]) -> dict[str, str]:
    ids = list(dict.fromkeys(ev.event_id for env in envelopes for ev in env.bundle.events))
    rows = await con.fetch(
        "SELECT event_id, digest FROM events WHERE event_id = ANY($1::text[])", ids
    )
    return {r["event_id"]: r["digest"] for r in rows}


async def _insert_events(con: asyncpg.Connection, p: Plan) -> None:
    # COPY straight into events: the unique index on event_id waits for a concurrent
    # writer of the same id and then fails the COPY, which rolls the whole batch back to be
    # retried (no staging table, so each row is written once).
    try:
        await con.copy_records_to_table("events", records=p.rows, columns=STAGE_COLUMNS)
    except asyncpg.UniqueViolationError as exc:
        raise RaceLost from exc
    last = p.events[-1]
    await con.execute(
        "INSERT INTO heads(partition, seq, hash) VALUES ($1, $2, $3) ON CONFLICT (partition) "
        "DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        last.partition, last.seq, last.hash,
    )  # fmt: skip


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


async def _bump_counts(
    con: asyncpg.Connection, partition: int, kind: str, types: Sequence[str]
) -> None:
    counts = Counter(types)
    if counts:
        await con.execute(
            "INSERT INTO graph_counts(partition, kind, type, n) "
            "SELECT $1, $2, t, n FROM unnest($3::text[], $4::bigint[]) AS u(t, n) "
            "ON CONFLICT (partition, kind, type) DO UPDATE SET n = graph_counts.n + excluded.n",
            partition, kind, list(counts), list(counts.values()),
        )  # fmt: skip


async def merge_graph(con: asyncpg.Connection, partition: int, delta: Graph) -> None:
    """Join ``delta`` into the stored graph inside the caller's transaction.

    Missing nodes are first inserted empty (in key order, so concurrent writers lock rows
    in the same order and cannot deadlock), then every affected row is locked and read
    with ``FOR UPDATE``: a concurrent writer's committed properties are never overwritten.
    """
    keys = sorted(delta.nodes)
    types, ids = [k[0] for k in keys], [k[1] for k in keys]
    created = await con.fetch(
        "INSERT INTO nodes(type, id, vals, vers) SELECT t, i, '{}', '{}' "
        "FROM unnest($1::text[], $2::text[]) AS u(t, i) ORDER BY t, i "
        "ON CONFLICT (type, id) DO NOTHING RETURNING type",
        types, ids,
    )  # fmt: skip
    await _bump_counts(con, partition, "node", [r["type"] for r in created])
    rows = await con.fetch(
        "SELECT n.type, n.id, n.vals, n.vers FROM nodes n "
        "JOIN unnest($1::text[], $2::text[]) AS u(t, i) ON n.type = u.t AND n.id = u.i "
        "ORDER BY n.type, n.id FOR UPDATE OF n",
        types, ids,
    )  # fmt: skip
    stored = {(r["type"], r["id"]): props_from_json(r["vals"], r["vers"]) for r in rows}
    columns: list[list[Any]] = [[] for _ in range(8)]
    for key in keys:
        values, versions = props_to_json(merge_props(stored.get(key), delta.nodes[key]))
        row = (*key, _json(values), _json(versions), *node_columns(key, values))
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    # One statement for all nodes (arrays, not one round trip per node).
    await con.execute(
        "UPDATE nodes SET vals = u.v::jsonb, vers = u.r::jsonb, target = u.tg, status = u.st, "
        "last_seen = u.ls, task_id = u.tk FROM unnest($1::text[], $2::text[], $3::text[], "
        "$4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) "
        "AS u(t, i, v, r, tg, st, ls, tk) WHERE nodes.type = u.t AND nodes.id = u.i",
        *columns,
    )
    edges = sorted(delta.edges, key=lambda e: (e.type, e.src_type, e.src, e.dst_type, e.dst))
    added = await con.fetch(
        "INSERT INTO edges SELECT * FROM unnest($1::text[], $2::text[], $3::text[], "
        "$4::text[], $5::text[]) ON CONFLICT DO NOTHING RETURNING type",
        [e.type for e in edges], [e.src_type for e in edges], [e.src for e in edges],
        [e.dst_type for e in edges], [e.dst for e in edges],
    )  # fmt: skip
    await _bump_counts(con, partition, "edge", [r["type"] for r in added])


def _bundle_attempt(bundle: Bundle) -> str | None:
    ids = {ev.payload.get("attempt_id") for ev in bundle.events}
    ids.discard(None)
    if len(ids) != 1:
        return None
    only = ids.pop()
    return only if isinstance(only, str) else str(only)


async def store_artifacts(con: asyncpg.Connection, envelopes: Sequence[Envelope]) -> None:
    rows = []
    for env in envelopes:
        attempt = _bundle_attempt(env.bundle)
        for art in env.bundle.artifacts or []:
            artifact_id = (art.model_extra or {}).get("artifact_id")
            rows.append(
                (env.bundle.bundle_id, attempt,
                 artifact_id if isinstance(artifact_id, str) else art.sha256,
                 art.sha256, art.kind, art.uri, art.size)
            )  # fmt: skip
    if rows:
        await con.executemany(
            "INSERT INTO artifacts(bundle_id, attempt_id, artifact_id, sha256, kind, uri, size) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            rows,
        )


async def write_batch(
    con: asyncpg.Connection, partition: int, envelopes: Sequence[Envelope]
) -> BatchResult:
    """The whole batch; the caller holds the transaction and retries on :class:`RaceLost`."""
    await con.execute("SELECT pg_advisory_xact_lock($1, $2)", WRITE_LOCK_CLASS, partition)
    head = await con.fetchrow("SELECT seq, hash FROM heads WHERE partition = $1", partition)
    seq, prev = (0, GENESIS_HASH) if head is None else (head["seq"], head["hash"])
    p = plan(partition, envelopes, await _known_digests(con, envelopes), seq, prev)
    if p.events:
        await _insert_events(con, p)
        await merge_graph(con, partition, fold(p.events))
    await store_artifacts(con, envelopes)
    return BatchResult(len(p.events), p.duplicates, p.conflicts)
