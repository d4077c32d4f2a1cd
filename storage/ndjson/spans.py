"""Event spans of the NDJSON index: where the events of a target, task or attempt lie.

Pipeline position: :func:`storage.ndjson.write.write_batch` inserts a batch's events and
then :func:`record` notes, for each of :data:`KINDS`, every run of them that shares a
value (a batch's rows take consecutive gids, so a run is a gid range). The reads by
target, task or attempt (``GET /v1/events?target=``, ``?task_id=``, ``?attempt_id=``, an
attempt's page) take the value's spans in order and each span's range of ``events``. One
row per run instead of an index entry per event: a worker's bundle is one target and
usually one task and attempt, and the per-event indexes of the three cost the consumer's
drain more than anything else in the index. Retention drops spans below the oldest event
kept (:func:`forget_before`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any

# each kind is the events column of that name, at that place in an index row
# (storage.ndjson.write's layout); the most selective first
KINDS = {"attempt_id": 9, "task_id": 8, "target": 10}


def from_events(kind: str) -> str:
    """Spans of every stored event for one kind: runs of consecutive events (in gid
    order) with one value. A row's rank among all events minus its rank among those
    with its value is constant along a run (gaps-and-islands)."""
    assert kind in KINDS  # spelt into the SQL
    return f"""
INSERT INTO event_spans(kind, value, last_gid, first_gid)
SELECT '{kind}', value, max(gid), min(gid) FROM (
    SELECT gid, {kind} AS value,
        row_number() OVER (ORDER BY gid)
        - row_number() OVER (PARTITION BY {kind} ORDER BY gid) AS run
    FROM events
) WHERE value IS NOT NULL GROUP BY value, run
"""


# OR REPLACE: gids are never taken twice (retention keeps the newest event, a rolled-back
# batch takes its spans along), but an index whose events rows were removed by hand
# must still take new batches
_INSERT = "INSERT OR REPLACE INTO event_spans(kind, value, last_gid, first_gid) VALUES (?, ?, ?, ?)"


def record(con: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Spans of ``rows``, the events the caller's transaction has just inserted in this
    order: being alone to write, they took the newest gids, one after another."""
    if not rows:
        return
    first = con.execute("SELECT max(gid) FROM events").fetchone()[0] - len(rows) + 1
    out = []
    for kind, at in KINDS.items():
        gid = first
        for value, run in groupby(rows, key=itemgetter(at)):
            n = len(list(run))
            if value is not None:
                out.append((kind, value, gid + n - 1, gid))
            gid += n
    con.executemany(_INSERT, out)


def forget_before(con: sqlite3.Connection) -> None:
    """Drop the spans that end below the oldest stored event (after retention)."""
    con.execute(
        "DELETE FROM event_spans WHERE last_gid < (SELECT coalesce(min(gid), 0) FROM events)"
    )


def events_sql(columns: str, kind: str, filters: Sequence[str], limit: bool = True) -> str:
    """The events with one value of ``kind`` after a gid, in gid order: the value's spans
    from the first that ends past that gid, each a range of the primary key (the value is
    checked on the row too, so a span can only narrow what is read). Parameters: the
    value, the gid twice, one per filter, then the limit."""
    assert kind in KINDS  # spelt into the SQL
    cols = ", ".join(f"e.{c.strip()}" for c in columns.split(","))
    where = "".join(f" AND e.{f} = ?" for f in filters)
    return (
        f"SELECT {cols} FROM event_spans s JOIN events e "
        "ON e.gid BETWEEN s.first_gid AND s.last_gid "
        f"WHERE s.kind = '{kind}' AND s.value = ? AND s.last_gid > ? AND e.gid > ? "
        f"AND e.{kind} = s.value{where} ORDER BY s.last_gid, e.gid" + (" LIMIT ?" if limit else "")
    )
