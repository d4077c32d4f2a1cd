"""Target spans of the NDJSON index: where each target's events lie in gid order.

Pipeline position: :func:`storage.ndjson.write.write_batch` inserts a batch's events and
then :func:`record` notes each run of them that shares a target (a batch's rows take
consecutive gids, so a run is a gid range); ``GET /v1/events?target=`` reads the target's
spans in order and each span's range of ``events``. One row per run instead of an index
entry per event: the consumer's drain paid ~2.5% for that index. Retention drops spans
below the oldest event kept (:func:`forget_before`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any

# the target column of an index row (storage.ndjson.write's layout)
TARGET_AT = 10

# Runs of consecutive events (in gid order) with one target: a row's rank among all
# events minus its rank among its target's is constant along a run (gaps-and-islands).
FROM_EVENTS = """
INSERT INTO target_spans(target, last_gid, first_gid)
SELECT target, max(gid), min(gid) FROM (
    SELECT gid, target,
        row_number() OVER (ORDER BY gid)
        - row_number() OVER (PARTITION BY target ORDER BY gid) AS run
    FROM events
) GROUP BY target, run
"""

# OR REPLACE: gids are never taken twice (retention keeps the newest event, a rolled-back
# batch takes its spans along), but an index whose events rows were removed by hand
# must still take new batches
_INSERT = "INSERT OR REPLACE INTO target_spans(target, last_gid, first_gid) VALUES (?, ?, ?)"


def record(con: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Spans of ``rows``, the events the caller's transaction has just inserted in this
    order: being alone to write, they took the newest gids, one after another."""
    if not rows:
        return
    last = con.execute("SELECT max(gid) FROM events").fetchone()[0]
    gid = last - len(rows) + 1
    out = []
    for target, run in groupby(rows, key=itemgetter(TARGET_AT)):
        n = sum(1 for _ in run)
        out.append((target, gid + n - 1, gid))
        gid += n
    con.executemany(_INSERT, out)


def forget_before(con: sqlite3.Connection) -> None:
    """Drop the spans that end below the oldest stored event (after retention)."""
    con.execute(
        "DELETE FROM target_spans WHERE last_gid < (SELECT coalesce(min(gid), 0) FROM events)"
    )


def events_sql(columns: str, filters: Sequence[str]) -> str:
    """The target's events after a gid, in gid order: its spans from the first that
    ends past that gid, each a range of the primary key (the target is checked on the
    row too, so a span can only narrow what is read)."""
    cols = ", ".join(f"e.{c.strip()}" for c in columns.split(","))
    where = "".join(f" AND e.{f} = ?" for f in filters)
    return (
        f"SELECT {cols} FROM target_spans s JOIN events e "
        "ON e.gid BETWEEN s.first_gid AND s.last_gid "
        f"WHERE s.target = ? AND s.last_gid > ? AND e.gid > ? AND e.target = s.target{where} "
        "ORDER BY s.last_gid, e.gid LIMIT ?"
    )
