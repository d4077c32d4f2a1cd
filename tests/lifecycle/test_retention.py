"""Retention: events that arrived before the cut go, the chains keep checkpoints that
``verify`` starts from, the graph stays, writers keep writing (both backends)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from leviathan_cp.cli import main
from storage.base import EventStore
from storage.chain import ChainPoint
from storage.config import StorageSettings, create_store
from storage.envelope import Envelope
from storage.ndjson import log
from tests.factories import attempt_lifecycle, envelope, tasks_with_dependencies
from tests.lifecycle.conftest import use_backend

pytestmark = pytest.mark.integration

OLD, NEW = 1_700_000_000.0, 1_800_000_000.0  # 2023-11 and 2027-01 arrivals
CUT = 1_750_000_000.0

Factory = Callable[[], EventStore]


@pytest.fixture(params=["ndjson", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSettings:
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("postgres_url")
        return StorageSettings(backend="postgres", postgres_dsn=dsn, partitions=2)
    return StorageSettings(backend="ndjson", ndjson_dir=tmp_path / "log", partitions=2)


@pytest.fixture
async def store(settings: StorageSettings) -> AsyncIterator[EventStore]:
    instance = create_store(settings, writer=True)
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()


def _attempt(name: str, received_at: float, n: int) -> Envelope:
    raw = attempt_lifecycle(f"att-{name}", "task-api", id_prefix=name, target="demo")
    return envelope(raw, entry_id=f"{n}-0", received_at=received_at)


async def _fill(store: EventStore) -> None:
    tasks = tasks_with_dependencies("demo")
    await store.write_batch(0, [envelope(tasks, "1-0", OLD)])
    for i in range(6):
        await store.write_batch(i % 2, [_attempt(f"old{i}", OLD + i, 10 + i)])
    for i in range(2):
        await store.write_batch(i % 2, [_attempt(f"new{i}", NEW + i, 20 + i)])


async def _listed(store: EventStore) -> list[Any]:
    return [e.view() async for e in store.iter_events()]


async def test_retain_removes_what_arrived_before_the_cut_and_keeps_graph_and_chain(
    store: EventStore,
) -> None:
    await _fill(store)
    before = await _listed(store)
    tasks_before = await store.list_tasks()
    graph_before = await store.graph()
    first = {p: next(e for e in before if e.partition == p) for p in (0, 1)}

    done = await store.retain(CUT, batch=7)  # several batches per partition
    assert sum(r.removed for r in done) == sum(1 for e in before if e.received_at < "2025")
    after = await _listed(store)
    assert after == [e for e in before if e.received_at > "2025"]
    assert {e.attempt_id for e in after} == {"att-new0", "att-new1"}
    # the graph and the read models keep the state the removed events made
    assert (await store.graph()).nodes == graph_before.nodes
    assert await store.list_tasks() == tasks_before
    assert (await store.get_attempt("att-old0")) is not None
    attempts = await store.list_attempts(limit=50)
    assert len(attempts.items) == 8

    checkpoints = await store.checkpoints()
    for p in (0, 1):
        kept = [e for e in after if e.partition == p]
        cp = checkpoints[p]
        assert kept[0].seq == cp.seq + 1
        assert kept[0].prev_hash == cp.hash
        full = await store.verify_chain(p)
        assert full.ok, full
        assert full.checked == kept[-1].seq
        # a prefix verified before the cut resumes at the checkpoint
        resumed = await store.verify_chain(p, after=ChainPoint(1, first[p].hash))
        assert resumed.ok, resumed
    stats = {s.partition: s for s in await store.log_stats()}
    assert stats[0].oldest_received_at == NEW
    assert stats[0].events + stats[1].events == len(after)

    assert await store.retain(CUT) == []  # nothing more to remove
    await store.write_batch(0, [_attempt("later", NEW + 10, 30)])
    assert (await store.verify_chain(0)).ok


async def test_an_edit_after_the_checkpoint_is_found(
    store: EventStore, settings: StorageSettings
) -> None:
    await _fill(store)
    await store.retain(CUT)
    kept = [e for e in await _listed(store) if e.partition == 0]
    if settings.backend == "ndjson":
        path = log.active(settings.ndjson_dir, 0)[1]
        data = path.read_bytes()
        at = data.index(b'"att-new0"')  # lines before it were removed, unlisted, still here
        tail = data[at:].replace(b'"status":"running"', b'"status":"hacked!"', 1)
        path.write_bytes(data[:at] + tail)
    else:
        con = await asyncpg.connect(settings.postgres_url())
        try:
            await con.execute("ALTER TABLE events DISABLE TRIGGER events_no_update")
            await con.execute(
                "UPDATE events SET actor_id = 'mallory' WHERE partition = 0 AND seq = $1",
                kept[1].seq,
            )
        finally:
            await con.close()
    status = await store.verify_chain(0)
    assert not status.ok
    assert status.broken_at_seq is not None
    assert status.broken_at_seq > (await store.checkpoints())[0].seq


async def test_ndjson_segments_rotate_and_retention_deletes_whole_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log, "SEGMENT_BYTES", 4000)
    directory = tmp_path / "log"
    store = create_store(StorageSettings(backend="ndjson", ndjson_dir=directory), writer=True)
    await store.open()
    try:
        for i in range(12):
            await store.write_batch(0, [_attempt(f"old{i}", OLD + i, i + 1)])
        for i in range(3):
            await store.write_batch(0, [_attempt(f"new{i}", NEW + i, 100 + i)])
        files = log.segments(directory, 0)
        assert len(files) > 3
        assert files[0][1].name == "events-0000.ndjson"  # the first keeps the old name
        listed = await _listed(store)
        assert len(listed) == 15 * 5
        assert (await store.verify_chain(0)).ok
        await store.retain(CUT, batch=10)
        left = log.segments(directory, 0)
        assert len(left) < len(files)
        assert left[0][1] != files[0][1]
        assert [e.attempt_id for e in await _listed(store)] == [
            e.attempt_id for e in listed if e.received_at > "2025"
        ]
        assert (await store.verify_chain(0)).ok
    finally:
        await store.close()
    # a restarted writer recovers over the remaining segments and keeps appending
    again = create_store(StorageSettings(backend="ndjson", ndjson_dir=directory), writer=True)
    await again.open()
    try:
        await again.write_batch(0, [_attempt("after", NEW + 50, 200)])
        assert (await again.verify_chain(0)).ok
        assert len(await _listed(again)) == 4 * 5
    finally:
        await again.close()


async def test_writers_keep_writing_while_retain_runs(store: EventStore) -> None:
    for i in range(40):
        await store.write_batch(i % 2, [_attempt(f"old{i}", OLD + i, i + 1)])
    written = 0
    stop = asyncio.Event()

    async def writer() -> None:
        nonlocal written
        n = 0
        while not stop.is_set() and n < 5000:
            n += 1
            await store.write_batch(n % 2, [_attempt(f"live{n}", time.time(), 1000 + n)])
            written += 1
            await asyncio.sleep(0)  # as a consumer awaits Redis between batches

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(0.05)
        done = await store.retain(CUT, batch=20)
    finally:
        stop.set()
        await task
    assert sum(r.removed for r in done) == 40 * 5
    listed = await _listed(store)
    assert len(listed) == written * 5
    assert all(e.attempt_id and e.attempt_id.startswith("att-live") for e in listed)
    for p in (0, 1):
        assert (await store.verify_chain(p)).ok


async def test_retain_command_then_verify_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = use_backend(monkeypatch, "ndjson", tmp_path / "log")
    store = create_store(settings, writer=True)
    await store.open()
    try:
        await _fill(store)
    finally:
        await store.close()
    assert await asyncio.to_thread(main, ["verify"]) == 0  # remembers prefixes before the cut
    args = ["retain", "--before", "2025-06-15"]
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr().out
    assert "retain: 35 events removed" in out
    assert "partition 0: removed" in out
    assert await asyncio.to_thread(main, ["verify"]) == 0
    assert await asyncio.to_thread(main, ["verify", "--full"]) == 0
    assert await asyncio.to_thread(main, ["retain", "--before", "not a date"]) == 2
