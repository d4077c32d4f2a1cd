"""Topology index of the PostgreSQL backend: upsert per batch, reads for the query API.

Pipeline position: :func:`storage.postgres.write.write_batch` calls :func:`upsert_topology` in
the batch's transaction with the batch's envelopes; :class:`storage.postgres.store.PostgresStore`
serves ``GET /v1/topology/*`` from :func:`summary` and :func:`items`. The rows and the
rule that the newest version wins are :mod:`storage.topology`'s; the table (migration
0004) compares versions in the "C" collation, by code point as Python does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from storage.envelope import Envelope
from storage.readside import decode_cursor, display_time, topology_page
from storage.topology import SUMMARY, rows_of_envelopes
from storage.views import Page, TopologySummary

# Rows are sent sorted by key and inserted in that order, so two writers upserting
# overlapping items lock them in the same order (no deadlock between partitions).
UPSERT = """
INSERT INTO topology AS t (target, kind, item, version_ts, event_id, digest, payload)
SELECT tg, k, i, v, e, d, p::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[]) WITH ORDINALITY AS u(tg, k, i, v, e, d, p, n)
ORDER BY n
ON CONFLICT (target, kind, item) DO UPDATE SET
    version_ts = excluded.version_ts, event_id = excluded.event_id,
    digest = excluded.digest, payload = excluded.payload
WHERE (excluded.version_ts, excluded.event_id, excluded.digest)
    > (t.version_ts, t.event_id, t.digest)
"""


async def upsert_topology(con: asyncpg.Connection, envelopes: Sequence[Envelope]) -> None:
    """Merge the batch's topology events into the index (no round trip without any)."""
    rows = sorted(rows_of_envelopes(envelopes), key=lambda r: r.key)
    if not rows:
        return
    columns: list[list[str]] = [[], [], [], [], [], [], []]
    for r in rows:
        values = (r.target, r.kind, r.item, r.version_ts, r.event_id, r.digest,
                  orjson.dumps(r.payload).decode())  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    await con.execute(UPSERT, *columns)


# The read queries: primary-key lookups and range scans (tests/storage/test_topology.py
# checks their plans), whatever the size of the event log.
SUMMARY_SQL = (
    "SELECT payload, version_ts, event_id FROM topology "
    "WHERE target = $1 AND kind = $2 AND item = ''"
)
COUNTS_SQL = "SELECT kind, count(*) AS n FROM topology WHERE target = $1 GROUP BY kind"
ITEMS_SQL = (
    "SELECT item, payload FROM topology WHERE target = $1 AND kind = $2 AND item > $3 "
    "ORDER BY item LIMIT $4"
)


async def summary(con: asyncpg.Connection, target: str) -> TopologySummary | None:
    row = await con.fetchrow(SUMMARY_SQL, target, SUMMARY)
    if row is None:
        return None
    counts = await con.fetch(COUNTS_SQL, target)
    return TopologySummary(
        target=target,
        payload=row["payload"],
        timestamp=display_time(row["version_ts"]) or row["version_ts"],
        event_id=row["event_id"],
        counts={r["kind"]: int(r["n"]) for r in counts if r["kind"] != SUMMARY},
    )


async def items(
    con: asyncpg.Connection, target: str, kind: str, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    """Payloads of one kind of item of ``target``, by item key; keyset pages."""
    after = "" if cursor is None else str(decode_cursor(cursor, 1)[0])
    rows = await con.fetch(ITEMS_SQL, target, kind, after, limit + 1)
    return topology_page([(r["item"], r["payload"]) for r in rows], limit)
