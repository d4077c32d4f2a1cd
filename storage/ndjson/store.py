"""NDJSON backend (the dev default): per-partition log files + SQLite sidecar.

Pipeline position: the consumer's :meth:`NdjsonStore.write_batch` appends each batch to
``events-{p:04d}.ndjson`` under the configured directory (one fsync per batch) and then
commits the index, chain head and graph to ``index.sqlite3`` (see
:mod:`storage.ndjson.write`); the ingest tier's query API opens its own instance over the
same directory and reads the index (WAL) and the files. Writers in several processes
serialise on ``write.lock`` (filelock), so lines never interleave and chains never fork.
All file and SQLite work runs in a worker thread; this module only schedules it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from storage.base import (
    BatchResult,
    LogStat,
    Retained,
    StorageDataError,
    StorageUnavailable,
    StoredEvent,
    describe,
)
from storage.chain import (
    GENESIS,
    ChainPoint,
    Checkpoint,
    first_broken_link,
    resume_mismatch,
    walk_start,
)
from storage.envelope import Envelope
from storage.ndjson import graph, log
from storage.ndjson import index as idx
from storage.ndjson import read as rd
from storage.ndjson import retain as ret
from storage.ndjson import write as wr
from storage.projection import Graph, fold
from storage.readside import chain_status, recent_event
from storage.views import (
    AttemptDetail,
    AttemptSummary,
    ChainStatus,
    EventView,
    FailureView,
    GraphSummary,
    Page,
    TaskDetail,
    TaskSummary,
    TopologySummary,
)

T = TypeVar("T")
# Raised while planning or writing a batch because of a value in it (an integer SQLite
# cannot hold, a constraint the data breaks): the same batch would fail again.
DATA_ERRORS = (TypeError, ValueError, OverflowError, sqlite3.IntegrityError, sqlite3.DataError)
LOCK_FILE = "write.lock"
LOCK_TIMEOUT = 60.0
PAGE = 1000
# ~0.3 s of blocking at the consumer's 15-25 µs per event on a 2-core VM
LOOP_WRITE_MAX_EVENTS = 20_000


class NdjsonStore:
    """:class:`storage.base.EventStore` over NDJSON files in ``directory``."""

    def __init__(
        self, directory: Path, *, write_on_loop: bool = False, writer: bool = True
    ) -> None:
        """``write_on_loop``: see :meth:`write_batch` (the consumer sets it).

        ``writer``: False for an instance that only reads (the query API): its :meth:`open`
        never runs write-side recovery, so it never writes to the log's index. Complete
        lines a crashed writer left past the indexed size stay unindexed (unseen by reads)
        until a writer opens the directory or writes that partition, which recovers them
        under the write lock (their batch was not acknowledged, so it is delivered again).
        """
        self.directory = Path(directory)
        self.write_on_loop = write_on_loop
        self.writer = writer
        self._con: sqlite3.Connection | None = None
        self._mu = threading.Lock()  # the write connection, used by one thread at a time
        self._lock = FileLock(str(self.directory / LOCK_FILE), timeout=LOCK_TIMEOUT)
        # Reads run on connections of their own, one per concurrent read (a pool as deep
        # as the most reads ever in flight at once, at most the worker threads): in WAL
        # mode they neither wait for each other nor for a batch commit on ``_con``.
        self._idle: list[sqlite3.Connection] = []
        self._readers: list[sqlite3.Connection] = []
        self._pool_mu = threading.Lock()
        # The event loop's own reader (reads on the loop never overlap): it never waits
        # for a lock, see _query.
        self._loop_con: sqlite3.Connection | None = None

    # -- plumbing -------------------------------------------------------------------
    def _call(
        self, fn: Callable[[sqlite3.Connection], T], con: sqlite3.Connection | None = None
    ) -> T:
        """``fn`` on ``con`` (default: the write connection, the caller holds ``_mu``)."""
        con = con or self._con
        if con is None:
            raise StorageUnavailable("NDJSON store is not open")
        try:
            return fn(con)
        except (OSError, sqlite3.OperationalError) as exc:
            # disk full, I/O error, "database is locked", a vanished directory: transient
            raise StorageUnavailable(f"NDJSON store: {describe(exc)}") from exc
        except sqlite3.DatabaseError as exc:
            # the index file cannot be used as it is (e.g. malformed): retried, never
            # blamed on a batch; an operator rebuilds it from the logs
            raise StorageUnavailable(f"NDJSON index unusable: {describe(exc)}") from exc

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._mu:
                return self._call(fn)

        return await asyncio.to_thread(call)

    def _checkout(self) -> sqlite3.Connection:
        with self._pool_mu:
            if self._con is None:
                raise StorageUnavailable("NDJSON store is not open")
            if self._idle:
                return self._idle.pop()
        con = idx.connect_reader(self.directory)
        with self._pool_mu:
            self._readers.append(con)
        return con

    def _checkin(self, con: sqlite3.Connection) -> None:
        with self._pool_mu:
            if con in self._readers:  # not closed meanwhile
                self._idle.append(con)

    def _snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` on a reader connection of its own, in one read transaction (one
        snapshot: a read of several statements sees one state of the index)."""
        try:
            con = self._checkout()
        except (OSError, sqlite3.Error) as exc:
            raise StorageUnavailable(f"NDJSON store: {describe(exc)}") from exc
        try:
            return self._call(_in_transaction(fn), con)
        finally:
            self._checkin(con)

    def _loop_reader(self) -> sqlite3.Connection:
        if self._loop_con is None:
            if self._con is None:
                raise StorageUnavailable("NDJSON store is not open")
            try:
                con = idx.connect_reader(self.directory, busy_ms=0)
            except (OSError, sqlite3.Error) as exc:
                raise StorageUnavailable(f"NDJSON store: {describe(exc)}") from exc
            with self._pool_mu:
                self._readers.append(con)
            self._loop_con = con
        return self._loop_con

    async def _query(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read of the query API — a page of at most its limit, or a lookup — run on the
        event loop. In a worker thread such a read cost the process half as much CPU
        again and tripled the p99 with 16 concurrent readers (bench.query --load): the
        loop and the thread traded the GIL at every step of a read that is Python work
        for the most part. Bulk reads go through :meth:`_read`.

        The loop's connection never waits for a lock: in the rare moment a read cannot
        start at once (SQLite recovering the WAL after a crash, say), it is run in a
        worker thread, which waits as long as any read may, and the loop goes on."""
        try:
            return self._call(_in_transaction(fn), self._loop_reader())
        except StorageUnavailable as exc:
            cause = exc.__cause__
            busy = isinstance(cause, sqlite3.OperationalError) and (
                cause.sqlite_errorcode & 0xFF in _BUSY  # the primary code of an extended one
            )
            if not busy:
                raise
        return await self._read(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A bulk read (an export page, the whole graph, a count): in a worker thread, so
        the loop keeps answering meanwhile."""
        return await asyncio.to_thread(self._snapshot, fn)

    def _locked(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
        def call(con: sqlite3.Connection) -> T:
            try:
                with self._lock:
                    return fn(con)
            except Timeout as exc:
                raise StorageUnavailable(f"NDJSON write lock busy: {exc}") from exc

        return call

    def _open_sync(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._mu:
            if self._con is None:
                self._con = idx.connect(self.directory)
        if self.writer:
            self._run_sync_recovery()

    def _run_sync_recovery(self) -> None:
        def recover_all(con: sqlite3.Connection) -> None:
            with idx.immediate(con):
                found = {log.partition_of_path(p) for p in self.directory.glob("events-*.ndjson")}
                for partition in sorted(p for p in found if p is not None):
                    wr.recover(con, self.directory, partition)

        with self._mu:
            assert self._con is not None
            with self._lock:
                recover_all(self._con)

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self._open_sync)
        except (OSError, sqlite3.Error, Timeout) as exc:
            raise StorageUnavailable(f"cannot open NDJSON store: {exc}") from exc

    async def close(self) -> None:
        def shut() -> None:
            with self._pool_mu:
                readers, self._readers, self._idle = self._readers, [], []
                self._loop_con = None
            for con in readers:
                con.close()  # a read still running on one fails: it was closing time
            with self._mu:
                if self._con is not None:
                    self._con.close()
                    self._con = None

        await asyncio.to_thread(shut)

    async def ping(self) -> None:
        await self._query(lambda con: con.execute("SELECT 1").fetchone())
        if not self.directory.is_dir():
            raise StorageUnavailable(f"NDJSON directory {self.directory} is missing")

    # -- write side -----------------------------------------------------------------
    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        """Append and index one batch (see :func:`storage.ndjson.write.write_batch`).

        With ``write_on_loop`` a batch of up to :data:`LOOP_WRITE_MAX_EVENTS` events runs
        on the calling thread whenever both locks are free at once, blocking the event
        loop for the batch (tens of ms for the default 200 bundles). It is Python CPU work
        all through, so a worker thread only made it trade the GIL with the loop: the
        consumer drains 6-17% more per second this way. A lock held elsewhere (a reader of
        this store, another process's write) is waited for in a thread, as usual, and so
        is a batch so large that it would keep health probes waiting.
        """

        def write(con: sqlite3.Connection) -> BatchResult:
            try:
                return wr.write_batch(con, self.directory, partition, envelopes)
            except DATA_ERRORS as exc:  # rolled back: nothing of the batch is stored
                raise StorageDataError(f"NDJSON store refused the batch: {describe(exc)}") from exc

        on_loop = (
            self.write_on_loop
            and sum(len(env.bundle.events) for env in envelopes) <= LOOP_WRITE_MAX_EVENTS
        )
        if on_loop and self._mu.acquire(blocking=False):
            try:
                if self._try_file_lock():
                    try:
                        return self._call(write)
                    finally:
                        self._lock.release()
            finally:
                self._mu.release()
        return await self._run(self._locked(write))

    def _try_file_lock(self) -> bool:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    # -- read side ------------------------------------------------------------------
    async def graph_summary(self, recent: int = 20) -> GraphSummary:
        def query(con: sqlite3.Connection) -> GraphSummary:
            counts = con.execute("SELECT kind, type, n FROM graph_counts WHERE n > 0").fetchall()
            nodes = {t: n for kind, t, n in counts if kind == "node"}
            edges = {t: n for kind, t, n in counts if kind == "edge"}
            rows = con.execute(
                f"SELECT {rd.EVENT_COLS} FROM events ORDER BY gid DESC LIMIT ?", (recent,)
            ).fetchall()
            events = [recent_event(e) for e in rd.load_events(self.directory, rows)]
            return GraphSummary(nodes_by_type=nodes, edges_by_type=edges, recent_events=events)

        return await self._query(query)

    async def list_attempts(
        self,
        *,
        target: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[AttemptSummary]:
        return await self._query(lambda con: rd.list_attempts(con, target, status, limit, cursor))

    async def get_attempt(self, attempt_id: str) -> AttemptDetail | None:
        return await self._query(lambda con: rd.get_attempt(con, self.directory, attempt_id))

    async def list_failures(
        self, *, target: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[FailureView]:
        return await self._query(
            lambda con: rd.list_failures(con, self.directory, target, limit, cursor)
        )

    async def recent_events(self, limit: int = 50) -> list[EventView]:
        def query(con: sqlite3.Connection) -> list[EventView]:
            rows = con.execute(
                f"SELECT {rd.EVENT_COLS} FROM events ORDER BY gid DESC LIMIT ?", (limit,)
            ).fetchall()
            return [e.view() for e in rd.load_events(self.directory, rows)]

        return await self._query(query)

    async def list_events(
        self,
        *,
        after: str | None = None,
        limit: int = 100,
        task_id: str | None = None,
        attempt_id: str | None = None,
        event_type: str | None = None,
        target: str | None = None,
    ) -> Page[EventView]:
        filters = {
            "task_id": task_id,
            "attempt_id": attempt_id,
            "event_type": event_type,
            "target": target,
        }
        return await self._query(
            lambda con: rd.list_events(con, self.directory, after, limit, filters)
        )

    async def list_tasks(
        self,
        *,
        target: str | None = None,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[TaskSummary]:
        return await self._query(lambda con: rd.list_tasks(con, target, status, limit, cursor))

    async def get_task(self, task_id: str) -> TaskDetail | None:
        return await self._query(lambda con: rd.get_task(con, task_id))

    async def attempt_exists(self, attempt_id: str) -> bool:
        return await self._query(lambda con: rd.node_props(con, "Attempt", attempt_id) is not None)

    async def topology_summary(self, target: str) -> TopologySummary | None:
        return await self._query(lambda con: rd.topology_summary(con, target))

    async def topology_items(
        self, target: str, kind: str, *, limit: int = 1000, cursor: str | None = None
    ) -> Page[dict[str, Any]]:
        return await self._query(lambda con: rd.topology_items(con, target, kind, limit, cursor))

    async def verify_chain(self, partition: int, after: ChainPoint | None = None) -> ChainStatus:
        # a retention running meanwhile may move the checkpoint under the walk: a break
        # seen while the checkpoint moved is walked again from the new one
        for _ in range(3):
            before = await self._run(lambda con: idx.checkpoint(con, partition))
            status = await self._verify_once(partition, after, before)
            if status.ok or before == await self._run(lambda con: idx.checkpoint(con, partition)):
                return status
        return status

    async def _verify_once(
        self,
        partition: int,
        after: ChainPoint | None,
        checkpoint: tuple[Checkpoint, int] | None,
    ) -> ChainStatus:
        start, at_checkpoint = walk_start(after, checkpoint[0] if checkpoint else None)
        # where the verified prefix ends in the log: the index knows each event's line
        where = None
        if start.seq and not at_checkpoint:
            where = await self._read(
                lambda con: con.execute(
                    "SELECT offset, length FROM events WHERE partition = ? AND seq = ?",
                    (partition, start.seq),
                ).fetchone()
            )

        def walk() -> ChainStatus:
            with log.Segments(self.directory, partition) as segments:
                offset, found = 0, None
                if checkpoint is not None and at_checkpoint:
                    offset = checkpoint[1]
                elif where is not None:
                    offset = int(where[0]) + int(where[1])
                    found = _line_at(segments, int(where[0]), int(where[1]))
                if not at_checkpoint:
                    mismatch = resume_mismatch(partition, start, found)
                    if mismatch is not None:
                        return chain_status(mismatch)
                lines = _checked_lines(segments, start, offset)
                return chain_status(first_broken_link(partition, lines, start))

        try:
            return await asyncio.to_thread(walk)
        except _BadLine as bad:
            return ChainStatus(
                partition=partition,
                checked=bad.checked,
                ok=False,
                last_hash=bad.last_hash,
                broken_at_seq=bad.checked + 1,
                broken_event_id=None,
                reason=str(bad),
            )

    # -- retention (storage/ndjson/retain.py) ------------------------------------------
    async def retain(self, before: float, *, batch: int = 5000) -> list[Retained]:
        return await ret.retain(self, before, batch)

    async def checkpoints(self) -> dict[int, Checkpoint]:
        def query(con: sqlite3.Connection) -> dict[int, Checkpoint]:
            rows = con.execute("SELECT partition, seq, hash, received_at FROM checkpoints")
            return {int(r[0]): Checkpoint(int(r[1]), r[2], r[3]) for r in rows}

        return await self._run(query)

    async def log_stats(self) -> list[LogStat]:
        return await ret.log_stats(self)

    async def partitions(self) -> list[int]:
        return await self._query(
            lambda con: [
                int(r[0])
                for r in con.execute("SELECT partition FROM heads WHERE seq > 0 ORDER BY 1")
            ]
        )

    async def iter_events(self, partition: int | None = None) -> AsyncIterator[StoredEvent]:
        where = "" if partition is None else f"WHERE partition = {int(partition)}"
        order = "gid" if partition is None else "seq"
        last = -1
        while True:
            after = last

            def page(con: sqlite3.Connection, after: int = after) -> list[Any]:
                return con.execute(
                    f"SELECT {rd.EVENT_COLS}, {order} FROM events "
                    f"{where} {'AND' if where else 'WHERE'} {order} > ? ORDER BY {order} LIMIT ?",
                    (after, PAGE),
                ).fetchall()

            rows = await self._read(page)
            if not rows:
                return
            events = await asyncio.to_thread(rd.load_events, self.directory, [r[:5] for r in rows])
            for ev in events:
                yield ev
            last = rows[-1][5]

    async def graph(self) -> Graph:
        return await self._read(graph.read_graph)

    async def rebuild_graph(self) -> int:
        events = [ev async for ev in self.iter_events()]
        folded = fold(events)

        def swap(con: sqlite3.Connection) -> None:
            with idx.immediate(con):
                graph.replace_graph(con, folded)

        await self._run(self._locked(swap))
        return len(events)

    async def count_events(self) -> int:
        return await self._read(
            lambda con: int(con.execute("SELECT count(*) FROM events").fetchone()[0])
        )


_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _in_transaction(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    def snapshot(con: sqlite3.Connection) -> T:
        con.execute("BEGIN")
        try:
            return fn(con)
        finally:
            con.execute("COMMIT")

    return snapshot


class _BadLine(ValueError):
    """A line of a partition file that is not a stored event (hand-edited or corrupt)."""

    def __init__(self, message: str, checked: int, last_hash: str) -> None:
        super().__init__(message)
        self.checked = checked
        self.last_hash = last_hash


def _line_at(segments: log.Segments, offset: int, length: int) -> StoredEvent | None:
    """The stored event whose line the index places at ``offset`` (``None`` if unreadable)."""
    try:
        return log.decode_line(segments.read(offset, length))
    except (OSError, ValueError, TypeError):
        return None


def _checked_lines(segments: log.Segments, start: ChainPoint = GENESIS, offset: int = 0) -> Any:
    """The events of the log from byte ``offset`` on (the line after ``start``)."""
    checked, last_hash = start.seq, start.hash
    for number, line in enumerate(segments.lines_from(offset), start=1):
        try:
            ev = log.decode_line(line)
        except (ValueError, TypeError) as exc:
            where = f"line {number}" if offset == 0 else f"line {number} after seq {start.seq}"
            raise _BadLine(f"{where} is not a stored event: {exc}", checked, last_hash) from None
        yield ev
        checked, last_hash = checked + 1, ev.hash
