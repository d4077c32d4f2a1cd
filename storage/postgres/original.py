"""The original control plane's PostgreSQL ``events`` table, read for an import.

Pipeline position: the source of ``leviathan-cp import --format original-postgres``. Rows
are read in ``id`` order (the original's insert order) in pages, so memory stays flat.
Each row's hash is re-checked with the original's rule (storage/lifecycle/original.py):
the original hashed the timestamp text as its client sent it, which the table no longer
holds, so the UTC form, the naive form and then every whole-hour offset are tried. Its
chain linked each row to the row with the greatest timestamp at insert time, so late
events fork it; the links are checked in SQL: how many rows name a ``prev_hash`` that no
earlier row has, and how many ``prev_hash`` values are shared by several rows (forks).
The arrival time of an imported event is the row's ``created_at`` (the original's insert
time).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg

from storage.lifecycle.original import original_hash

PAGE = 2000
_OFFSETS = [timezone(timedelta(hours=h)) for h in range(-12, 15) if h != 0]


@dataclass(slots=True)
class PostgresChainCheck:
    """The original table's chain: rows whose hash does not re-verify, dangling links, forks."""

    rows: int = 0
    bad_hashes: list[int] = field(default_factory=list)  # row ids
    dangling: int = 0
    first_dangling: int | None = None
    forks: int = 0
    first_fork: list[int] = field(default_factory=list)  # row ids sharing one prev_hash

    def summary(self) -> str:
        parts = [f"{self.rows} rows"]
        parts.append(
            "every hash re-verifies"
            if not self.bad_hashes
            else f"{len(self.bad_hashes)} hash(es) not matching their row "
            f"(ids {', '.join(map(str, self.bad_hashes[:10]))})"
        )
        if self.dangling:
            parts.append(
                f"{self.dangling} prev_hash(es) naming no earlier row, first id "
                f"{self.first_dangling}"
            )
        if self.forks:
            ids = ", ".join(map(str, self.first_fork))
            parts.append(f"{self.forks} fork(s), the first: rows {ids} share one prev_hash")
        ok = not (self.bad_hashes or self.dangling or self.forks)
        return ("original chain ok: " if ok else "original chain BROKEN: ") + "; ".join(parts)


def row_hash_ok(event: dict[str, Any], when: datetime) -> bool:
    """Whether the row's hash matches some text form of its timestamp."""
    stored = event.get("hash")
    forms = [when.isoformat(), when.replace(tzinfo=None).isoformat()]
    if any(original_hash(event, form) == stored for form in forms):
        return True
    return any(original_hash(event, when.astimezone(tz).isoformat()) == stored for tz in _OFFSETS)


async def check_links(con: asyncpg.Connection, check: PostgresChainCheck) -> None:
    row = await con.fetchrow(
        "SELECT count(*) AS n, min(e.id) AS first FROM events e WHERE e.prev_hash IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM events p WHERE p.hash = e.prev_hash AND p.id < e.id)"
    )
    if row is not None:
        check.dangling, check.first_dangling = int(row["n"]), row["first"]
    forks = await con.fetch(
        "SELECT array_agg(id ORDER BY id) AS ids FROM events WHERE prev_hash IS NOT NULL "
        "GROUP BY prev_hash HAVING count(*) > 1 ORDER BY min(id)"
    )
    check.forks = len(forks)
    check.first_fork = list(forks[0]["ids"]) if forks else []


async def read_events(
    dsn: str, check: PostgresChainCheck
) -> AsyncIterator[tuple[int, dict[str, Any], float]]:
    """``(row id, event, arrival epoch)`` per row of the original's ``events``, in id order."""
    con = await asyncpg.connect(dsn)
    try:
        await check_links(con, check)
        last = -1
        while True:
            rows = await con.fetch(
                'SELECT id, event_id, event_type, "timestamp", actor_id, payload::text, '
                "prev_hash, hash, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2",
                last,
                PAGE,
            )
            if not rows:
                return
            for row in rows:
                when: datetime = row["timestamp"]
                if when.tzinfo is None:  # a table the original made without its migration
                    when = when.replace(tzinfo=UTC)
                when = when.astimezone(UTC)
                event = {
                    "event_id": row["event_id"],
                    "event_type": row["event_type"],
                    "timestamp": when.isoformat(),
                    "actor_id": row["actor_id"],
                    "payload": json.loads(row["payload"]),
                    "prev_hash": row["prev_hash"],
                    "hash": row["hash"],
                }
                check.rows += 1
                if not row_hash_ok(event, when):
                    check.bad_hashes.append(int(row["id"]))
                yield int(row["id"]), event, (row["created_at"] or when).timestamp()
            last = int(rows[-1]["id"])
    finally:
        await con.close()
