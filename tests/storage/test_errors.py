"""write_batch failures come out classified: StorageDataError for data the backend refuses
(the batch stays unwritten, atomically), StorageUnavailable for everything transient.

The data cases bypass the schema (``model_construct``), as a bundle from another producer
or an older ingest could: the schema refuses them at the door, storage must still refuse
them cleanly instead of failing its batch with a driver error.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from pydantic import ValidationError

from storage.base import (
    EntryOutcome,
    EventStore,
    StorageDataError,
    StorageError,
    StorageTimeout,
    StorageUnavailable,
)
from storage.envelope import Envelope, decode
from storage.ndjson import log as ndjson_log
from storage.ndjson.store import NdjsonStore
from storage.postgres import write as pg_write
from storage.postgres.errors import classify
from storage.postgres.store import PostgresStore
from storage.projection import Graph
from storage.schema import Bundle, WireArtifact, WireEvent, parse_timestamp
from tests import factories as f


def unchecked(raw: dict[str, Any], *, size: int | None = None, entry_id: str = "1-0") -> Envelope:
    """An envelope built without validation; ``size`` set on one bundle artifact."""
    events = [
        WireEvent.model_construct(**dict(e, timestamp=parse_timestamp(e["timestamp"])))
        for e in raw["events"]
    ]
    artifacts = (
        None if size is None else [WireArtifact.model_construct(sha256="ab" * 32, size=size)]
    )
    bundle = Bundle.model_construct(
        target=raw["target"], bundle_id=raw["bundle_id"], events=events, artifacts=artifacts
    )
    return Envelope(bundle=bundle, received_at=1_764_320_000.0, token_label="t", entry_id=entry_id)


async def test_out_of_range_artifact_size_is_a_data_error_and_stores_nothing(
    store: EventStore,
) -> None:
    raw = f.attempt_lifecycle("att-big", "task-big")
    with pytest.raises(StorageDataError) as caught:
        await store.write_batch(0, [unchecked(raw, size=2**63)])
    assert "\n" not in str(caught.value)
    assert await store.count_events() == 0
    assert await store.graph() == Graph()
    # the partition is not blocked: the same events with a storable size go through
    result = await store.write_batch(0, [unchecked(raw, size=2**63 - 1)])
    assert result.written == len(raw["events"])
    assert (await store.verify_chain(0)).ok


async def test_role_fields_of_any_json_type_are_coped_with(store: EventStore) -> None:
    """An attempt_id that is a list used to raise TypeError in the artifact planner."""
    raw = f.body(
        "t",
        "b-odd",
        [
            f.event("attempt.created", {"attempt_id": ["a", 1], "task_id": {"x": 1}}),
            f.event("task.created", {"task_id": "k", "depends_on": ["x" * 300, 7, None]}),
            f.event("target.registered", {"target": {"deep": [1]}, "status": 3}),
        ],
    )
    result = await store.write_batch(0, [unchecked(raw, size=10)])
    assert result.written == 3
    assert result.outcomes == {"1-0": EntryOutcome(3, 0, 0)}
    graph = await store.graph()
    assert ("Task", "k") in graph.nodes
    assert {e.dst for e in graph.edges if e.src == "k"} == {"7", "t"}


async def test_ndjson_disk_full_is_transient_and_leaves_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = NdjsonStore(tmp_path)
    await store.open()
    try:
        await store.write_batch(0, [f.envelope(f.attempt_lifecycle("a1", "t"))])
        size = ndjson_log.partition_path(tmp_path, 0).stat().st_size

        def full(*_: Any) -> tuple[int, int]:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ndjson_log, "append", full)
        with pytest.raises(StorageUnavailable, match="No space left"):
            await store.write_batch(0, [f.envelope(f.attempt_lifecycle("a2", "t"), "2-0")])
        monkeypatch.undo()
        assert ndjson_log.partition_path(tmp_path, 0).stat().st_size == size
        assert await store.count_events() == 5
    finally:
        await store.close()


async def test_ndjson_locked_index_is_transient(tmp_path: Path) -> None:
    store = NdjsonStore(tmp_path)
    await store.open()
    other = sqlite3.connect(tmp_path / "index.sqlite3", isolation_level=None)
    try:
        assert store._con is not None
        store._con.execute("PRAGMA busy_timeout=50")
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageUnavailable, match="database is locked"):
            await store.write_batch(0, [f.envelope(f.attempt_lifecycle("a1", "t"))])
        other.execute("ROLLBACK")
        assert (await store.write_batch(0, [f.envelope(f.attempt_lifecycle("a1", "t"))])).written
    finally:
        other.close()
        await store.close()


@pytest.fixture
async def pg(postgres_url: str) -> Any:
    store = PostgresStore(postgres_url, min_size=1, max_size=1)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.integration
async def test_terminated_connection_mid_batch_is_transient(
    pg: PostgresStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pg_write.write_batch
    admin = await asyncpg.connect(postgres_url)

    async def killed(con: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        pid = await con.fetchval("SELECT pg_backend_pid()")
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        return await real(con, *args, **kwargs)

    try:
        monkeypatch.setattr(pg_write, "write_batch", killed)
        raw = f.attempt_lifecycle("att-k", "task-k")
        with pytest.raises(StorageUnavailable) as caught:
            await pg.write_batch(0, [f.envelope(raw)])
        assert "\n" not in str(caught.value)
        monkeypatch.undo()
        assert await pg.count_events() == 0
        assert (await pg.write_batch(0, [f.envelope(raw)])).written == 5  # the pool recovers
    finally:
        await admin.close()


@pytest.mark.integration
async def test_statement_timeout_is_a_bounded_transient(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pg_write.write_batch

    async def slow(con: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        await con.execute("SET LOCAL statement_timeout = 50")
        await con.execute("SELECT pg_sleep(2)")
        return await real(con, *args, **kwargs)

    monkeypatch.setattr(pg_write, "write_batch", slow)
    with pytest.raises(StorageTimeout, match="QueryCanceledError"):
        await pg.write_batch(0, [f.envelope(f.attempt_lifecycle("att-s", "task-s"))])
    monkeypatch.undo()
    assert await pg.count_events() == 0


@pytest.mark.integration
async def test_unreachable_server_is_transient() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/none", min_size=1, max_size=1)
    with pytest.raises(StorageUnavailable):
        await asyncio.wait_for(store.open(), 30)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (asyncpg.DiskFullError("disk full"), StorageUnavailable),
        (asyncpg.SerializationError("could not serialize"), StorageUnavailable),
        (asyncpg.DeadlockDetectedError("deadlock"), StorageUnavailable),
        (asyncpg.QueryCanceledError("statement timeout"), StorageTimeout),
        (asyncpg.AdminShutdownError("terminating"), StorageUnavailable),
        (asyncpg.CannotConnectNowError("starting up"), StorageUnavailable),
        (asyncpg.TooManyConnectionsError("too many"), StorageUnavailable),
        (asyncpg.ConnectionDoesNotExistError("closed"), StorageUnavailable),
        (asyncpg.InterfaceError("connection is closed"), StorageUnavailable),
        (ConnectionResetError(errno.ECONNRESET, "reset"), StorageUnavailable),
        (TimeoutError(), StorageUnavailable),
        (asyncpg.NumericValueOutOfRangeError("out of range"), StorageDataError),
        (asyncpg.CharacterNotInRepertoireError("bad byte"), StorageDataError),
        (asyncpg.CheckViolationError("check"), StorageDataError),
        (asyncpg.ProgramLimitExceededError("index row size"), StorageDataError),
        (TypeError("unhashable type: 'list'"), StorageDataError),
        (OverflowError("int too big"), StorageDataError),
    ],
)
def test_classify(exc: BaseException, kind: type[StorageError]) -> None:
    error = classify(exc)
    assert type(error) is kind
    assert "\n" not in str(error)


def test_classify_client_side_encoding_error_is_data() -> None:
    from asyncpg.exceptions._base import DataError

    exc = DataError("invalid input for query argument $7: 9223372036854775808\n(out of range)")
    error = classify(exc)
    assert isinstance(error, StorageDataError)
    assert "\n" not in str(error)
    assert classify(asyncio.CancelledError()) is None


async def test_a_stream_entry_skips_the_role_check_and_is_stored(store: EventStore) -> None:
    """The consumer's decode trusts ingest's role check (its cost was ~1 µs per event of
    the drain): an entry from another producer with odd role fields decodes and stores."""
    raw = f.body(
        "t", "b-other", [f.event("attempt.created", {"attempt_id": ["a"], "task_id": "x" * 300})]
    )
    with pytest.raises(ValidationError):  # ingest answers 422 for it
        Bundle.model_validate(raw)
    fields = {b"v": b"1", b"bundle": orjson.dumps(raw), b"received_at": b"1.0", b"token": b"t"}
    envelope = decode("1-0", fields)
    assert envelope.bundle.events[0].payload["attempt_id"] == ["a"]
    result = await store.write_batch(0, [envelope])
    assert result.outcomes == {"1-0": EntryOutcome(1, 0, 0)}
    assert (await store.verify_chain(0)).ok
