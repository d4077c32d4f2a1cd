"""NDJSON backend specifics: crash recovery, multi-process appends, O(1) append path."""

from __future__ import annotations

import asyncio
import builtins
import multiprocessing
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from filelock import FileLock

from storage.base import StorageCorrupt, StorageDataError, StorageUnavailable, StoredEvent
from storage.config import StorageSettings, create_store
from storage.ndjson import index as ndjson_index
from storage.ndjson import read as ndjson_read
from storage.ndjson import write as ndjson_write
from storage.ndjson.log import partition_path
from storage.ndjson.store import NdjsonStore
from tests import factories as f


async def opened(directory: Path) -> NdjsonStore:
    store = NdjsonStore(directory)
    await store.open()
    return store


def lifecycle(i: int, prefix: str = "a") -> Any:
    return f.envelope(f.attempt_lifecycle(f"{prefix}-{i}", f"task-{i}"), entry_id=f"{i}-0")


async def test_index_behind_file_is_recovered(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    await store.write_batch(0, [lifecycle(1)])
    graph_before = await store.graph()
    await store.close()
    # simulate a crash after the append+fsync but before the index commit
    con = sqlite3.connect(tmp_path / "index.sqlite3")
    with con:
        con.execute("DELETE FROM events")
        con.execute("DELETE FROM heads")
        con.execute("DELETE FROM nodes")
        con.execute("DELETE FROM edges")
    con.close()
    store = await opened(tmp_path)
    try:
        assert await store.count_events() == 5
        assert await store.graph() == graph_before
        result = await store.write_batch(0, [lifecycle(2)])
        assert result.written == 5
        assert (await store.verify_chain(0)).checked == 10
        assert (await store.write_batch(0, [lifecycle(1)])).duplicates == 5
    finally:
        await store.close()


def test_rows_per_insert_respects_the_host_parameter_limit() -> None:
    con = sqlite3.connect(":memory:")
    assert ndjson_write.rows_per_insert(con) == 256
    con.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # SQLite before 3.32
    assert ndjson_write.rows_per_insert(con) == 999 // 12  # twelve columns per row
    con.close()


@pytest.mark.parametrize("offset", [-255, -1, 0, 1, 258])
async def test_every_event_of_a_batch_is_indexed_at_its_line(tmp_path: Path, offset: int) -> None:
    """The index takes many rows per INSERT; batch sizes around that width all land whole."""
    count = ndjson_write.rows_per_insert(sqlite3.connect(":memory:")) + offset
    store = await opened(tmp_path)
    try:
        events = [f.event("file.discovered", {"task_id": "t", "n": i}) for i in range(count)]
        envelope = f.envelope(f.body("repo-a", f"bundle-{count}", events), entry_id="1-0")
        assert (await store.write_batch(3, [envelope])).written == count
        page = await store.list_events(limit=1000)
        assert [(e.event_id, e.payload["n"], e.seq) for e in page.items] == [
            (ev["event_id"], i, i + 1) for i, ev in enumerate(events)
        ]
        assert len((await store.list_events(task_id="t", limit=1000)).items) == count
        assert (await store.verify_chain(3)).checked == count
    finally:
        await store.close()


async def test_torn_last_line_is_cut(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    await store.write_batch(0, [lifecycle(1)])
    await store.close()
    path = partition_path(tmp_path, 0)
    good_size = path.stat().st_size
    with path.open("ab") as fh:
        fh.write(b'{"event_id":"torn","event_ty')
    store = await opened(tmp_path)
    try:
        assert path.stat().st_size == good_size
        assert await store.count_events() == 5
        await store.write_batch(0, [lifecycle(2)])
        status = await store.verify_chain(0)
        assert (status.ok, status.checked) == (True, 10)
    finally:
        await store.close()


async def test_failed_commit_truncates_the_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(tmp_path)
    try:
        await store.write_batch(0, [lifecycle(1)])
        size = partition_path(tmp_path, 0).stat().st_size

        def broken(*_: Any) -> None:
            raise sqlite3.IntegrityError("simulated failure after the append")

        monkeypatch.setattr("storage.ndjson.index.set_head", broken)
        with pytest.raises(StorageDataError, match="IntegrityError: simulated failure"):
            await store.write_batch(0, [lifecycle(2)])
        monkeypatch.undo()
        assert partition_path(tmp_path, 0).stat().st_size == size
        assert await store.count_events() == 5
        assert (await store.write_batch(0, [lifecycle(2)])).written == 5
        assert (await store.verify_chain(0)).ok
    finally:
        await store.close()


async def test_file_grown_behind_the_index_refuses_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offsets are planned from the indexed size; a file that differs is not indexed wrong."""
    store = await opened(tmp_path)
    try:
        await store.write_batch(0, [lifecycle(1)])
        path = partition_path(tmp_path, 0)
        # recovery would index complete lines; without it the sizes disagree
        monkeypatch.setattr("storage.ndjson.write.recover", lambda *_: None)
        with path.open("ab") as fh:
            fh.write(b"\n")
        grown = path.stat().st_size
        with pytest.raises(StorageCorrupt, match="index says"):
            await store.write_batch(0, [lifecycle(2)])
        assert path.stat().st_size == grown  # the append was cut off again
        assert await store.count_events() == 5
    finally:
        await store.close()


@pytest.fixture
async def loop_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[NdjsonStore, list[int]]]:
    """A ``write_on_loop`` store, and the thread each of its batch writes ran on."""
    store = NdjsonStore(tmp_path, write_on_loop=True)
    await store.open()
    threads: list[int] = []
    real = ndjson_write.write_batch

    def spy(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(ndjson_write, "write_batch", spy)
    try:
        yield store, threads
    finally:
        await store.close()


async def test_write_on_loop_writes_on_the_calling_thread(
    loop_writer: tuple[NdjsonStore, list[int]],
) -> None:
    store, threads = loop_writer
    assert (await store.write_batch(0, [lifecycle(1)])).written == 5
    assert threads == [threading.get_ident()]
    assert (await store.verify_chain(0)).ok


async def test_write_on_loop_leaves_a_huge_batch_to_a_thread(
    loop_writer: tuple[NdjsonStore, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that would block the loop for long (health probes) is written in a thread."""
    store, threads = loop_writer
    monkeypatch.setattr("storage.ndjson.store.LOOP_WRITE_MAX_EVENTS", 5)
    await store.write_batch(0, [lifecycle(1)])  # 5 events: on the loop
    await store.write_batch(0, [lifecycle(2), lifecycle(3)])  # 10: in a thread
    assert threads[0] == threading.get_ident()
    assert threads[1] != threading.get_ident()
    assert await store.count_events() == 15


async def test_write_on_loop_waits_for_a_held_lock_off_the_loop(tmp_path: Path) -> None:
    """Another writer holds the directory lock: the batch waits in a thread, the loop runs."""
    store = NdjsonStore(tmp_path, write_on_loop=True)
    await store.open()
    other = FileLock(str(tmp_path / "write.lock"))  # another process's writer, in effect
    try:
        other.acquire()
        write = asyncio.create_task(store.write_batch(0, [lifecycle(1)]))
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.01)
            ticks += 1
        assert not write.done()
        assert ticks == 10
        other.release()
        assert (await asyncio.wait_for(write, 10)).written == 5
        assert await store.count_events() == 5
    finally:
        if other.is_locked:
            other.release()
        await store.close()


def _recording_threads(
    monkeypatch: pytest.MonkeyPatch, name: str, busy_on_loop: bool = False
) -> list[int]:
    """Wrap ``storage.ndjson.read.<name>`` to record the thread of each call; with
    ``busy_on_loop`` the call on the loop fails as SQLite does when a read cannot start."""
    threads: list[int] = []
    real = getattr(ndjson_read, name)

    def traced(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        if busy_on_loop and threading.current_thread() is threading.main_thread():
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorcode = sqlite3.SQLITE_BUSY_RECOVERY
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(ndjson_read, name, traced)
    return threads


async def test_query_reads_run_on_the_loop_and_bulk_reads_in_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(tmp_path)
    try:
        await store.write_batch(0, [lifecycle(1)])
        threads = _recording_threads(monkeypatch, "list_events")
        loaded = _recording_threads(monkeypatch, "load_events")
        assert len((await store.list_events(limit=10)).items) == 5
        assert threads == [threading.get_ident()]
        assert loaded == [threading.get_ident()]
        loaded.clear()
        assert len([e async for e in store.iter_events()]) == 5  # an export: off the loop
        assert loaded
        assert threading.get_ident() not in loaded
    finally:
        await store.close()


async def test_a_query_read_that_cannot_start_is_retried_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's reader never waits for SQLite's locks; a read that could not start
    (WAL recovery by another process, say) is run again where waiting is harmless."""
    store = await opened(tmp_path)
    try:
        await store.write_batch(0, [lifecycle(1)])
        threads = _recording_threads(monkeypatch, "list_events", busy_on_loop=True)
        assert len((await store.list_events(limit=10)).items) == 5
        assert threads[0] == threading.get_ident()
        assert len(threads) == 2
        assert threads[1] != threading.get_ident()
        # any other failure of the loop's read is the store's usual answer
        monkeypatch.setattr(ndjson_read, "list_events", _raises(sqlite3.DatabaseError("bad")))
        with pytest.raises(StorageUnavailable, match="NDJSON index unusable"):
            await store.list_events(limit=10)
    finally:
        await store.close()


def _raises(exc: BaseException) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return call


def page_size(directory: Path) -> int:
    con = sqlite3.connect(directory / "index.sqlite3")
    try:
        return int(con.execute("PRAGMA page_size").fetchone()[0])
    finally:
        con.close()


async def test_new_index_has_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    new, old = tmp_path / "new", tmp_path / "old"
    old.mkdir()
    sqlite3.connect(old / "index.sqlite3").execute("CREATE TABLE t (x)").connection.close()
    for directory in (new, old):
        store = await opened(directory)
        try:
            assert (await store.write_batch(0, [lifecycle(1)])).written == 5
            assert (await store.verify_chain(0)).ok
        finally:
            await store.close()
    assert page_size(new) == ndjson_index.PAGE_SIZE
    assert page_size(old) == 4096


async def test_index_connection_has_a_large_page_cache(tmp_path: Path) -> None:
    con = ndjson_index.connect(tmp_path)
    try:
        assert con.execute("PRAGMA cache_size").fetchone()[0] == -ndjson_index.CACHE_KIB
    finally:
        con.close()


async def test_reader_instance_sees_writer_instance(tmp_path: Path) -> None:
    writer = await opened(tmp_path)
    reader = await opened(tmp_path)
    try:
        assert await reader.count_events() == 0
        await writer.write_batch(2, [lifecycle(1)])
        assert await reader.count_events() == 5
        assert await reader.attempt_exists("a-1")
        assert await reader.partitions() == [2]
    finally:
        await writer.close()
        await reader.close()


async def test_a_reader_never_recovers_an_unindexed_tail(tmp_path: Path) -> None:
    """Recovery belongs to the writer: a reader opening a directory whose log has complete
    lines past the indexed size leaves the index as it is; a writer opening it indexes them."""
    store = await opened(tmp_path)
    await store.write_batch(0, [lifecycle(1)])
    await store.close()
    index = tmp_path / "index.sqlite3"

    def indexed() -> tuple[int, list[tuple[Any, ...]]]:
        con = sqlite3.connect(index)
        try:
            count = con.execute("SELECT count(*) FROM events").fetchone()[0]
            return count, con.execute("SELECT * FROM heads").fetchall()
        finally:
            con.close()

    # a crash after the append+fsync but before the index commit
    con = sqlite3.connect(index)
    with con:
        for table in ("events", "heads", "nodes", "edges"):
            con.execute(f"DELETE FROM {table}")
    con.close()
    log_bytes = partition_path(tmp_path, 0).read_bytes()
    settings = StorageSettings(backend="ndjson", ndjson_dir=tmp_path)
    reader = create_store(settings)  # as the query API builds it
    await reader.open()
    try:
        assert await reader.count_events() == 0
    finally:
        await reader.close()
    assert indexed() == (0, [])
    assert partition_path(tmp_path, 0).read_bytes() == log_bytes
    writer = create_store(settings, writer=True)  # as the consumer builds it
    await writer.open()
    try:
        assert await writer.count_events() == 5
    finally:
        await writer.close()


async def test_append_never_reads_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await opened(tmp_path)
    try:
        await store.write_batch(0, [lifecycle(1)])
        modes: list[tuple[str, str]] = []
        real_open = builtins.open

        def spy(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if str(file).endswith(".ndjson"):
                modes.append((Path(str(file)).name, mode))
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", spy)
        await store.write_batch(0, [lifecycle(2)])
        monkeypatch.undo()
        assert modes == [("events-0000.ndjson", "ab")]
    finally:
        await store.close()


def _append_many(directory: str, prefix: str, count: int) -> None:
    async def run() -> None:
        store = await opened(Path(directory))
        try:
            for i in range(count):
                await store.write_batch(0, [lifecycle(i, prefix)])
        finally:
            await store.close()

    asyncio.run(run())


@pytest.mark.slow
async def test_two_processes_one_partition(tmp_path: Path) -> None:
    await (await opened(tmp_path)).close()  # create the directory and index first
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), prefix, 15)) for prefix in "pq"]
    for proc in procs:
        proc.start()
    for proc in procs:
        await asyncio.to_thread(proc.join, 120)
        assert proc.exitcode == 0
    lines = partition_path(tmp_path, 0).read_bytes().splitlines()
    events = [StoredEvent(**orjson.loads(line)) for line in lines]
    assert len(events) == len({e.event_id for e in events}) == 2 * 15 * 5
    store = await opened(tmp_path)
    try:
        status = await store.verify_chain(0)
        assert (status.ok, status.checked) == (True, 150)
        assert await store.count_events() == 150
    finally:
        await store.close()


# The events table of index files written before revisions existed (event_id UNIQUE, no
# revision column; the first versions used AUTOINCREMENT), and their lines had no
# "revision" key.
OLD_EVENTS = """
CREATE TABLE events (
    gid INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL,
    partition INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    task_id TEXT,
    attempt_id TEXT,
    target TEXT NOT NULL
);
CREATE UNIQUE INDEX events_pseq ON events(partition, seq);
CREATE INDEX events_attempt ON events(attempt_id);
CREATE INDEX events_task ON events(task_id);
CREATE INDEX events_type ON events(event_type);
"""


def to_old_layout(directory: Path) -> None:
    """Rewrite a store's partition 0 file and index as the code before revisions wrote them."""
    path = partition_path(directory, 0)
    lines = [
        line.replace(b',"revision":1}\n', b"}\n")
        for line in path.read_bytes().splitlines(keepends=True)
    ]
    assert all(b"revision" not in line for line in lines)
    path.write_bytes(b"".join(lines))
    con = sqlite3.connect(directory / "index.sqlite3", isolation_level=None)
    try:
        rows = con.execute(
            "SELECT gid, event_id, digest, partition, seq, event_type, timestamp, task_id, "
            "attempt_id, target FROM events ORDER BY seq"
        ).fetchall()
        con.executescript("DROP TABLE events;" + OLD_EVENTS)
        offset = 0
        for row, line in zip(rows, lines, strict=True):
            con.execute(
                "INSERT INTO events(gid, event_id, digest, partition, seq, offset, length, "
                "event_type, timestamp, task_id, attempt_id, target) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row[:5], offset, len(line), *row[5:]),
            )
            offset += len(line)
        con.execute("UPDATE heads SET size = ? WHERE partition = 0", (offset,))
    finally:
        con.close()


async def test_index_file_from_before_revisions_is_migrated_in_place(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    await store.write_batch(0, [lifecycle(1)])
    graph = await store.graph()
    await store.close()
    to_old_layout(tmp_path)
    store = await opened(tmp_path)  # migrates
    try:
        con = sqlite3.connect(tmp_path / "index.sqlite3")
        columns = [r[1] for r in con.execute("PRAGMA table_info(events)")]
        indexes = {r[1] for r in con.execute("PRAGMA index_list(events)")}
        con.close()
        assert "revision" in columns
        assert {"events_revision", "events_pseq", "events_type"} <= indexes
        events = [e async for e in store.iter_events()]
        assert [(e.seq, e.revision) for e in events] == [(i, 1) for i in range(1, 6)]
        assert all(e.digest for e in events)
        assert (await store.verify_chain(0)).ok
        assert await store.graph() == graph
        # old content is still recognised; new content under an old id is revision 2
        assert (await store.write_batch(0, [lifecycle(1)])).duplicates == 5
        raw = f.attempt_lifecycle("a-1", "task-1")
        raw["events"][0]["payload"]["note"] = "rerun"
        result = await store.write_batch(0, [f.envelope(raw, entry_id="9-0")])
        assert (result.written, result.revisions, result.duplicates) == (1, 1, 4)
        last = [e async for e in store.iter_events()][-1]
        assert (last.event_id, last.revision, last.seq) == ("a-1-01", 2, 6)
        assert (await store.verify_chain(0)).checked == 6
    finally:
        await store.close()
    reopened = await opened(tmp_path)  # a migrated file opens as is
    try:
        assert await reopened.count_events() == 6
    finally:
        await reopened.close()
