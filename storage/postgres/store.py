"""PostgreSQL implementation of :class:`storage.base.EventStore` (docs/design-notes.md).

Pipeline position: the consumer's :meth:`write_batch` target and the ingest query API's
read source when ``LEVIATHAN_STORAGE_BACKEND=postgres``. Owns the asyncpg pool (its
connections' codecs in :mod:`storage.postgres.codecs`) and the write retry policy; the SQL lives
in :mod:`storage.postgres.write` (write path), :mod:`storage.postgres.read` (views) and
:mod:`storage.postgres.migrate` (schema). Connection failures surface as
:class:`storage.base.StorageUnavailable` so the consumer retries instead of dead-lettering.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import asyncpg

from storage.base import (
    BatchResult,
    LogStat,
    Retained,
    StorageUnavailable,
    StoredEvent,
    describe,
)
from storage.chain import ChainPoint, Checkpoint, first_broken_link, resume_mismatch, walk_start
from storage.envelope import Envelope
from storage.postgres import graph as pg_graph
from storage.postgres import read as rd
from storage.postgres import retain as ret
from storage.postgres import topology as pg_topology
from storage.postgres import write as wr
from storage.postgres.codecs import init_connection, keep_session
from storage.postgres.errors import classify
from storage.postgres.migrate import CONNECTION_ERRORS, apply, migrate, unavailable
from storage.projection import ATTEMPT, Edge, Graph, fold, props_from_json
from storage.readside import chain_status
from storage.retention import retain_partition
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

__all__ = ["PostgresStore", "migrate"]

T = TypeVar("T")
PAGE = 1000
CLOSE_TIMEOUT = 10.0
# a race, deadlock or serialization failure with another partition's writer is retried
# this often at once, then reported as StorageUnavailable (the consumer retries later)
WRITE_ATTEMPTS = 5
RETRY_AT_ONCE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
CHECKED_AFTER_MISS = 20  # batches written checked after an optimistic attempt was refused


class PostgresStore:
    """Event log + graph in PostgreSQL; one pool per process."""

    def __init__(self, dsn: str, *, min_size: int, max_size: int) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._checked: dict[int, int] = {}  # partition -> batches left to write checked

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageUnavailable("PostgreSQL store is not open")
        return self._pool

    async def _with(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        try:
            async with self.pool.acquire() as con:
                # The proxy forwards every Connection method; the stubs type it apart.
                return await fn(cast(asyncpg.Connection, con))
        except CONNECTION_ERRORS as exc:
            raise unavailable(exc) from exc

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                init=init_connection,
                reset=keep_session,
            )
        except CONNECTION_ERRORS as exc:
            raise unavailable(exc) from exc
        self._pool = pool
        try:
            await self._with(apply)
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            pool.terminate()

    async def ping(self) -> None:
        await self._with(lambda con: con.fetchval("SELECT 1"))

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        # Optimistic first attempt: most batches hold only new events, so the stored
        # digests are not read; the unique index refuses a batch that held a stored one
        # (RaceLost), which is written again checked. After such a miss the partition's
        # next batches are checked from the start: a redelivery burst (a consumer restarted
        # before it acked) costs one refused attempt, not one per batch.
        check = self._checked.get(partition, 0) > 0
        if check:
            self._checked[partition] -= 1

        lock_ids = False
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return await self._write_once(partition, envelopes, check, lock_ids)
            except wr.RaceLost as exc:
                # a stored (event_id, revision) refused the COPY: an optimistic batch met a
                # stored event, or another partition's writer stored a revision of one of
                # our ids after we read them; rolled back, written again checked (and after
                # a checked loss, holding a lock per event_id)
                if not check:
                    check, self._checked[partition] = True, CHECKED_AFTER_MISS
                else:
                    lock_ids = True
                if attempt == WRITE_ATTEMPTS:
                    raise StorageUnavailable(
                        f"PostgreSQL: {WRITE_ATTEMPTS} attempts lost a race for an event_id "
                        f"revision to other writers ({describe(exc.__cause__ or exc)})"
                    ) from exc
            except RETRY_AT_ONCE as exc:
                if attempt == WRITE_ATTEMPTS:
                    raise unavailable(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write_once(
        self, partition: int, envelopes: Sequence[Envelope], check: bool, lock_ids: bool
    ) -> BatchResult:
        """One transaction; every failure but a race to retry comes out classified
        (:mod:`storage.postgres.errors`): StorageUnavailable or StorageDataError."""
        try:
            async with self.pool.acquire() as con, con.transaction():
                # The proxy forwards every Connection method; the stubs type it apart.
                return await wr.write_batch(
                    cast(asyncpg.Connection, con), partition, envelopes, check=check,
                    lock_ids=lock_ids,
                )  # fmt: skip
        except (wr.RaceLost, *RETRY_AT_ONCE):
            raise
        except Exception as exc:
            error = classify(exc)
            if error is None or error is exc:
                raise
            raise error from exc

    # -- read side ------------------------------------------------------------------
    async def graph_summary(self, recent: int = 20) -> GraphSummary:
        return await self._with(lambda con: rd.graph_summary(con, recent))

    async def list_attempts(
        self,
        *,
        target: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[AttemptSummary]:
        return await self._with(lambda con: rd.list_attempts(con, target, status, limit, cursor))

    async def get_attempt(self, attempt_id: str) -> AttemptDetail | None:
        return await self._with(lambda con: rd.get_attempt(con, attempt_id))

    async def list_failures(
        self, *, target: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[FailureView]:
        return await self._with(lambda con: rd.list_failures(con, target, limit, cursor))

    async def recent_events(self, limit: int = 50) -> list[EventView]:
        async def query(con: asyncpg.Connection) -> list[EventView]:
            rows = await con.fetch(
                f"SELECT {rd.EVENT_COLS} FROM events ORDER BY gid DESC LIMIT $1", limit
            )
            return [rd.to_event(r).view() for r in rows]

        return await self._with(query)

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
        return await self._with(lambda con: rd.list_events(con, after, limit, filters))

    async def list_tasks(
        self,
        *,
        target: str | None = None,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[TaskSummary]:
        return await self._with(lambda con: rd.list_tasks(con, target, status, limit, cursor))

    async def get_task(self, task_id: str) -> TaskDetail | None:
        return await self._with(lambda con: rd.get_task(con, task_id))

    async def attempt_exists(self, attempt_id: str) -> bool:
        async def query(con: asyncpg.Connection) -> bool:
            found = await con.fetchval(
                "SELECT 1 FROM nodes WHERE type = $1 AND id = $2", ATTEMPT, attempt_id
            )
            return found is not None

        return await self._with(query)

    async def topology_summary(self, target: str) -> TopologySummary | None:
        return await self._with(lambda con: pg_topology.summary(con, target))

    async def topology_items(
        self, target: str, kind: str, *, limit: int = 1000, cursor: str | None = None
    ) -> Page[dict[str, Any]]:
        return await self._with(lambda con: pg_topology.items(con, target, kind, limit, cursor))

    async def verify_chain(self, partition: int, after: ChainPoint | None = None) -> ChainStatus:
        # a retention running meanwhile may move the checkpoint under the walk: a break
        # seen while the checkpoint moved is walked again from the new one
        for _ in range(3):
            before = await self._with(lambda con: ret.checkpoint(con, partition))
            status = await self._verify_once(partition, after, before)
            if status.ok or before == await self._with(lambda con: ret.checkpoint(con, partition)):
                return status
        return status

    async def _verify_once(
        self, partition: int, after: ChainPoint | None, checkpoint: Checkpoint | None
    ) -> ChainStatus:
        # Streamed: the (synchronous) chain walk runs in a worker thread and pulls one
        # keyset page at a time from the event loop, so a long chain is never all in memory.
        # With ``after`` (or a retention checkpoint), the pages start past that prefix.
        start, at_checkpoint = walk_start(after, checkpoint)
        if start.seq and not at_checkpoint:

            async def at(con: asyncpg.Connection) -> StoredEvent | None:
                row = await con.fetchrow(
                    f"SELECT {rd.EVENT_COLS} FROM events WHERE partition = $1 AND seq = $2",
                    partition, start.seq,
                )  # fmt: skip
                return None if row is None else rd.to_event(row)

            mismatch = resume_mismatch(partition, start, await self._with(at))
            if mismatch is not None:
                return chain_status(mismatch)
        loop = asyncio.get_running_loop()
        pages = self._pages(partition, start.seq)

        async def next_page() -> list[StoredEvent]:
            return await anext(pages, [])

        def events() -> Iterator[StoredEvent]:
            while page := asyncio.run_coroutine_threadsafe(next_page(), loop).result():
                yield from page

        try:
            report = await asyncio.to_thread(first_broken_link, partition, events(), start)
        finally:
            await pages.aclose()
        return chain_status(report)

    # -- retention (storage/postgres/retain.py) ------------------------------------------
    async def retain(self, before: float, *, batch: int = 5000) -> list[Retained]:
        results = []
        for partition in await self._with(ret.partitions):

            async def one(
                con: asyncpg.Connection, p: int = partition
            ) -> tuple[int, Checkpoint, bool] | None:
                return await ret.step(con, p, before, batch)

            done = await retain_partition(partition, lambda: self._with(one))
            if done is not None:
                results.append(done)
        return results

    async def checkpoints(self) -> dict[int, Checkpoint]:
        return await self._with(ret.checkpoints)

    async def log_stats(self) -> list[LogStat]:
        return await self._with(ret.log_stats)

    async def partitions(self) -> list[int]:
        async def query(con: asyncpg.Connection) -> list[int]:
            rows = await con.fetch("SELECT partition FROM heads WHERE seq > 0 ORDER BY 1")
            return [int(r["partition"]) for r in rows]

        return await self._with(query)

    async def iter_events(self, partition: int | None = None) -> AsyncIterator[StoredEvent]:
        async for page in self._pages(partition):
            for event in page:
                yield event

    async def _pages(
        self, partition: int | None, after: int = 0
    ) -> AsyncGenerator[list[StoredEvent], None]:
        # Keyset pages instead of one long-lived cursor: no connection is held while the
        # caller consumes, and each page is an index range scan.
        order = "gid" if partition is None else "seq"
        where = "TRUE" if partition is None else "partition = $3"
        extra = () if partition is None else (partition,)
        last = after
        while True:
            after = last

            async def page(con: asyncpg.Connection, after: int = after) -> list[asyncpg.Record]:
                return await con.fetch(
                    f"SELECT {rd.EVENT_COLS} FROM events WHERE {where} AND {order} > $1 "
                    f"ORDER BY {order} LIMIT $2",
                    after, PAGE, *extra,
                )  # fmt: skip

            rows = await self._with(page)
            if not rows:
                return
            yield [rd.to_event(r) for r in rows]
            last = rows[-1][order]

    async def graph(self) -> Graph:
        async def query(con: asyncpg.Connection) -> Graph:
            graph = Graph()
            for r in await con.fetch("SELECT type, id, vals, vers FROM nodes"):
                graph.nodes[(r["type"], r["id"])] = props_from_json(r["vals"], r["vers"])
            for r in await con.fetch("SELECT type, src_type, src, dst_type, dst FROM edges"):
                graph.edges.add(Edge(*r))
            return graph

        return await self._with(query)

    async def rebuild_graph(self) -> int:
        async def swap(con: asyncpg.Connection) -> int:
            async with con.transaction():
                # Writers block on these locks before touching the graph, so every event
                # committed before the read below is folded here and every later one is
                # merged by its writer afterwards.
                await con.execute("LOCK TABLE nodes, edges, graph_counts IN EXCLUSIVE MODE")
                events = [rd.to_event(r) for r in await con.fetch(
                    f"SELECT {rd.EVENT_COLS} FROM events ORDER BY gid"
                )]  # fmt: skip
                await con.execute("DELETE FROM nodes")
                await con.execute("DELETE FROM edges")
                await con.execute("DELETE FROM graph_counts")
                await pg_graph.merge_graph(con, 0, fold(events))
                return len(events)

        return await self._with(swap)

    async def count_events(self) -> int:
        async def query(con: asyncpg.Connection) -> int:
            return int(await con.fetchval("SELECT count(*) FROM events"))

        return await self._with(query)
