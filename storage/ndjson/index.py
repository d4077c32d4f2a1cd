"""SQLite sidecar of the NDJSON backend: event index, chain heads, graph, artifacts.

Pipeline position: :mod:`storage.ndjson.store` appends events to per-partition NDJSON files (the
tamper-evident source of truth) and then commits what readers need here, in one SQLite
transaction: where each line lives, the partition's chain head and file size, the merged
graph nodes/edges and bundle artifacts. WAL mode lets a reader in another process (the
query API) see each commit without blocking the writer. Everything here is synchronous;
callers run it in a worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson

from storage.chain import Checkpoint
from storage.ndjson import graph, spans
from storage.ndjson.read import EVENT_COLS, LISTED_COLUMNS, LISTED_TYPES, load_events
from storage.readside import FAILURE_TYPES_SQL
from storage.revisions import Known, known_from
from storage.topology import MAX_ITEM_BYTES, TOPOLOGY_TYPES, rows_of_events

# events.gid is a plain rowid, not AUTOINCREMENT: rows are never deleted (a failed batch
# rolls back), so it only grows either way, and AUTOINCREMENT's bookkeeping cost each
# insert. Index files made before keep AUTOINCREMENT and behave the same.
# One row per revision of an event_id (storage.revisions): the unique key is
# (event_id, revision); the writer, alone under the directory lock, never stores a digest
# twice under one id.
EVENTS_TABLE = """
CREATE TABLE IF NOT EXISTS events (
    gid INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    partition INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    task_id TEXT,
    attempt_id TEXT,
    target TEXT NOT NULL,
    revision INTEGER NOT NULL DEFAULT 1
)
"""
EVENT_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS events_revision ON events(event_id, revision)",
    "CREATE UNIQUE INDEX IF NOT EXISTS events_pseq ON events(partition, seq)",
    # the type filter of /v1/events (target, task and attempt have spans); each entry ends
    # in the rowid (gid), so ``event_type = ? AND gid > ? ORDER BY gid`` is one range of it
    "CREATE INDEX IF NOT EXISTS events_type ON events(event_type)",
    # /v1/failures, newest first: only failure events have an entry
    f"CREATE INDEX IF NOT EXISTS events_failures ON events(gid) WHERE {FAILURE_TYPES_SQL}",
)
EVENT_COLUMNS = (
    "gid, event_id, digest, partition, seq, offset, length, event_type, timestamp, task_id, "
    "attempt_id, target"
)
SCHEMA = (
    EVENTS_TABLE
    + ";\n"
    + ";\n".join(EVENT_INDEXES)
    + """;
CREATE TABLE IF NOT EXISTS heads (
    partition INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    partition INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    received_at TEXT NOT NULL,
    offset INTEGER NOT NULL
);
-- target and status: what the listings filter on, for listed types only (graph.py)
CREATE TABLE IF NOT EXISTS nodes (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    vals TEXT NOT NULL,
    vers TEXT NOT NULL,
    target TEXT,
    status TEXT,
    PRIMARY KEY (type, id)
);
CREATE TABLE IF NOT EXISTS edges (
    type TEXT NOT NULL,
    src_type TEXT NOT NULL,
    src TEXT NOT NULL,
    dst_type TEXT NOT NULL,
    dst TEXT NOT NULL,
    PRIMARY KEY (type, src_type, src, dst_type, dst)
);
CREATE INDEX IF NOT EXISTS edges_dst ON edges(dst_type, dst);
CREATE INDEX IF NOT EXISTS nodes_kind ON nodes(type);
-- nodes and edges per type, kept by each batch (the graph summary reads these few rows)
CREATE TABLE IF NOT EXISTS graph_counts (
    kind TEXT NOT NULL,
    type TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (kind, type)
) WITHOUT ROWID;
"""
    # the listings' filters, one partial index per listed type: other nodes (artifacts,
    # targets, pull requests: most of them) have no entry
    + "".join(
        f"CREATE INDEX IF NOT EXISTS nodes_{t.lower()}_by_{column} ON nodes({column}) "
        f"WHERE type = '{t}';\n"
        for t in LISTED_TYPES
        for column in LISTED_COLUMNS
    )
    + """
-- where the events of a target, task or attempt lie: each run of a batch's events with
-- one value (consecutive gids) is one row, where an index took an entry per event (spans.py)
CREATE TABLE IF NOT EXISTS event_spans (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    last_gid INTEGER NOT NULL,
    first_gid INTEGER NOT NULL,
    PRIMARY KEY (kind, value, last_gid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,
    bundle_id TEXT NOT NULL,
    attempt_id TEXT,
    artifact_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT,
    uri TEXT,
    size INTEGER,
    UNIQUE (bundle_id, sha256, artifact_id)
);
CREATE INDEX IF NOT EXISTS artifacts_attempt ON artifacts(attempt_id);
CREATE TABLE IF NOT EXISTS topology (
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    item TEXT NOT NULL,
    version_ts TEXT NOT NULL,
    event_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (target, kind, item)
) WITHOUT ROWID;
"""
)

# per-event indexes of index files made before spans replaced them
SPANNED_INDEXES = ("events_target", "events_task", "events_attempt")

INDEX_FILE = "index.sqlite3"
PAGE_SIZE = 16384
CACHE_KIB = 65536
READER_MMAP_BYTES = 1 << 30


def connect(directory: Path) -> sqlite3.Connection:
    con = sqlite3.connect(
        directory / INDEX_FILE, isolation_level=None, check_same_thread=False, timeout=30.0
    )
    # A new file gets 16 KiB pages (4 KiB is SQLite's default): each batch dirties index
    # leaves all over the event_id/task/attempt indexes and every dirty page is a WAL
    # write plus a checkpoint write; with fewer, larger pages the consumer's NDJSON drain
    # ran 9% faster. Only effective before the first table exists: older files keep theirs.
    con.execute(f"PRAGMA page_size={PAGE_SIZE}")
    con.execute("PRAGMA journal_mode=WAL")
    # the NDJSON file is fsynced per batch and re-indexed after a crash, so the index can
    # use NORMAL sync: a lost index commit is recovered from the log on the next open
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA busy_timeout=30000")
    # SQLite's default cache is 2 MB, 125 of these pages: each batch re-read index leaves
    # from the OS that the previous one had just written (drain +5% with 64 MB). Pages
    # are cached as they are read, so a small index uses no more than its size.
    con.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    had_topology = _has(con, "table", "topology")
    had_counts = _has(con, "table", "graph_counts")
    had_spans = _has(con, "table", "event_spans")
    migrate_revisions(con)
    migrate_listed_columns(con)
    con.executescript(SCHEMA)
    if not had_spans or any(_has(con, "index", name) for name in SPANNED_INDEXES):
        rebuild_spans(con)
    if not had_topology:
        backfill_topology(con, directory)
    rekey_topology(con, directory)
    if not had_counts:
        backfill_counts(con)
    return con


@contextmanager
def immediate(con: sqlite3.Connection) -> Iterator[None]:
    """One write transaction taken at once (``BEGIN IMMEDIATE``): committed when the block
    ends, a return included, and rolled back on any exception."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _has(con: sqlite3.Connection, kind: str, name: str) -> bool:
    """Whether the file has the table or index (``kind``) of that name."""
    found = con.execute(
        "SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?", (kind, name)
    ).fetchone()
    return found is not None


def backfill_counts(con: sqlite3.Connection) -> None:
    """Count the graph an index made before ``graph_counts`` holds (once, when the table
    is new; a second process doing it at the same time writes the same numbers)."""
    with immediate(con):
        con.execute("DELETE FROM graph_counts")
        con.execute(
            "INSERT INTO graph_counts(kind, type, n) "
            "SELECT 'node', type, count(*) FROM nodes GROUP BY type "
            "UNION ALL SELECT 'edge', type, count(*) FROM edges GROUP BY type"
        )


def connect_reader(directory: Path, busy_ms: int = 30_000) -> sqlite3.Connection:
    """A connection that only reads (the query API's): the file exists and is migrated
    (:func:`connect` ran first), WAL is the file's own mode, so nothing is written here.
    ``busy_ms``: how long a read waits when it cannot start (0: it fails at once)."""
    con = sqlite3.connect(
        directory / INDEX_FILE,
        isolation_level=None,
        check_same_thread=False,
        timeout=busy_ms / 1000,
    )
    con.execute("PRAGMA query_only=1")
    con.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    # pages mapped, not copied into each reader's cache: the readers share the OS's
    con.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")
    return con


def _needs_revisions(con: sqlite3.Connection) -> bool:
    columns = {row[1] for row in con.execute("PRAGMA table_info(events)")}
    return bool(columns) and "revision" not in columns


def migrate_revisions(con: sqlite3.Connection) -> bool:
    """Rebuild an index file made before revisions existed, in place; True if it did.

    Its ``events`` table had ``event_id UNIQUE`` and no ``revision`` column, and SQLite
    cannot drop a column constraint, so the table is copied into the new layout (every
    existing row is revision 1: the old writer stored one content per id) in one
    transaction; a crash midway leaves the old file as it was.
    """
    if not _needs_revisions(con):  # the usual open: no write lock taken
        return False
    with immediate(con):
        if not _needs_revisions(con):  # another process migrated it meanwhile
            return False
        con.execute("ALTER TABLE events RENAME TO events_v1")
        for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events_v1' "
            "AND sql IS NOT NULL"
        ).fetchall():
            con.execute(f'DROP INDEX "{name}"')
        con.execute(EVENTS_TABLE)
        con.execute(
            f"INSERT INTO events({EVENT_COLUMNS}, revision) "
            f"SELECT {EVENT_COLUMNS}, 1 FROM events_v1 ORDER BY gid"
        )
        con.execute("DROP TABLE events_v1")
        for statement in EVENT_INDEXES:
            con.execute(statement)
    return True


def _needs_listed_columns(con: sqlite3.Connection) -> bool:
    columns = {row[1] for row in con.execute("PRAGMA table_info(nodes)")}
    return bool(columns) and "target" not in columns


def migrate_listed_columns(con: sqlite3.Connection) -> bool:
    """Give an index file made before the listed columns existed its nodes' ``target``
    and ``status`` columns, filled from their properties, in place of the expression
    indexes over the properties; True if it did. One transaction: a crash midway leaves
    the old file as it was."""
    if not _needs_listed_columns(con):  # the usual open: no write lock taken
        return False
    with immediate(con):
        if not _needs_listed_columns(con):  # another process migrated it meanwhile
            return False
        for column in LISTED_COLUMNS:
            con.execute(f"ALTER TABLE nodes ADD COLUMN {column} TEXT")
        for node_type in LISTED_TYPES:
            for column in LISTED_COLUMNS:
                con.execute(f'DROP INDEX IF EXISTS "nodes_{node_type.lower()}_{column}"')
            rows = con.execute("SELECT id, vals FROM nodes WHERE type = ?", (node_type,))
            con.executemany(
                "UPDATE nodes SET target = ?, status = ? WHERE type = ? AND id = ?",
                [
                    (*graph.listed_columns(node_type, orjson.loads(vals)), node_type, node_id)
                    for node_id, vals in rows.fetchall()
                ],
            )
    return True


def rebuild_spans(con: sqlite3.Connection) -> None:
    """Spans of every stored event, for an index file made before spans existed (it has
    per-event indexes of the spanned columns, dropped here) or one a writer without spans
    wrote to since (it made those indexes again)."""
    if con.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None:
        for name in SPANNED_INDEXES:
            con.execute(f"DROP INDEX IF EXISTS {name}")
        return
    with immediate(con):
        con.execute("DELETE FROM event_spans")
        for kind in spans.KINDS:
            con.execute(spans.from_events(kind))
        for name in SPANNED_INDEXES:
            con.execute(f"DROP INDEX IF EXISTS {name}")


def stored_digests(con: sqlite3.Connection, event_ids: Sequence[str]) -> Known:
    """What is stored under ``event_ids`` (every revision), as the planners read it."""
    found: list[tuple[str, str, int]] = []
    for part in graph.chunks(event_ids):
        marks = ",".join("?" * len(part))
        found += con.execute(
            f"SELECT event_id, digest, revision FROM events WHERE event_id IN ({marks})",
            tuple(part),
        ).fetchall()
    return known_from(found)


def head(con: sqlite3.Connection, partition: int) -> tuple[int, str, int] | None:
    row = con.execute(
        "SELECT seq, hash, size FROM heads WHERE partition = ?", (partition,)
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]), int(row[2]))


def set_head(con: sqlite3.Connection, partition: int, seq: int, hash_: str, size: int) -> None:
    con.execute(
        "INSERT INTO heads(partition, seq, hash, size) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(partition) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
        "size = excluded.size",
        (partition, seq, hash_, size),
    )


def checkpoint(con: sqlite3.Connection, partition: int) -> tuple[Checkpoint, int] | None:
    """The retention checkpoint of ``partition`` and the log offset right after it."""
    row = con.execute(
        "SELECT seq, hash, received_at, offset FROM checkpoints WHERE partition = ?", (partition,)
    ).fetchone()
    return None if row is None else (Checkpoint(int(row[0]), row[1], row[2]), int(row[3]))


def set_checkpoint(con: sqlite3.Connection, partition: int, point: Checkpoint, offset: int) -> None:
    con.execute(
        "INSERT INTO checkpoints(partition, seq, hash, received_at, offset) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(partition) DO UPDATE SET seq = excluded.seq, "
        "hash = excluded.hash, received_at = excluded.received_at, offset = excluded.offset",
        (partition, point.seq, point.hash, point.received_at, offset),
    )


def backfill_topology(con: sqlite3.Connection, directory: Path) -> None:
    """Index the topo events an older index already holds (once, when the table is new).

    Two processes opening the same directory may both run it: the upsert keeps the newest
    row per item whatever the order, so the second run changes nothing.
    """
    marks = ",".join("?" * len(TOPOLOGY_TYPES))
    rows = con.execute(
        f"SELECT {EVENT_COLS} FROM events WHERE event_type IN ({marks}) ORDER BY gid",
        tuple(sorted(TOPOLOGY_TYPES)),
    ).fetchall()
    if not rows:
        return
    with immediate(con):
        graph.merge_topology(con, rows_of_events(load_events(directory, rows)))


# PRAGMA user_version of an index whose topology items are bounded in bytes
TOPOLOGY_KEYS_VERSION = 1


def rekey_topology(con: sqlite3.Connection, directory: Path) -> bool:
    """Re-key, once per index file, the topology rows of items over
    :data:`storage.topology.MAX_ITEM_BYTES` (indexed before the bound was in bytes): each
    of their events gets its own ``event:{event_id}`` row, as PostgreSQL's migration 0006
    does. True if the file needed it."""
    if con.execute("PRAGMA user_version").fetchone()[0] >= TOPOLOGY_KEYS_VERSION:
        return False  # the usual open: no write lock taken
    with immediate(con):
        over = con.execute(
            "DELETE FROM topology WHERE length(CAST(item AS BLOB)) > ?", (MAX_ITEM_BYTES,)
        ).rowcount
        if over:
            marks = ",".join("?" * len(TOPOLOGY_TYPES))
            rows = con.execute(
                f"SELECT {EVENT_COLS} FROM events WHERE event_type IN ({marks}) ORDER BY gid",
                tuple(sorted(TOPOLOGY_TYPES)),
            ).fetchall()
            graph.merge_topology(con, rows_of_events(load_events(directory, rows)))
        con.execute(f"PRAGMA user_version = {TOPOLOGY_KEYS_VERSION}")
    return True
