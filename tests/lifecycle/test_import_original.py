"""``leviathan-cp import`` of the original control plane's NDJSON journal and PostgreSQL dump."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from bench.scratchdb import scratch_database
from leviathan_cp.cli import main
from storage.config import StorageSettings, create_store
from tests.lifecycle.conftest import JOURNAL_ROOT, restore_dump, use_backend

pytestmark = pytest.mark.integration


async def _counts(settings: StorageSettings) -> dict[str, object]:
    store = create_store(settings)
    await store.open()
    try:
        events = [e async for e in store.iter_events()]
        attempts = await store.list_attempts(limit=100)
        tasks = (await store.list_tasks(limit=100)).items
        topology = await store.topology_summary("leviathan")
        areas = await store.topology_items("leviathan", "area")
        chains = [await store.verify_chain(p) for p in range(settings.partitions)]
    finally:
        await store.close()
    return {
        "events": len(events),
        "ids": len({e.event_id for e in events}),
        "revisions": sum(1 for e in events if e.revision > 1),
        "attempts": sorted(a.attempt_id for a in attempts.items),
        "tasks": {t.task_id: sorted(t.depends_on) for t in tasks},
        "topology": topology,
        "areas": len(areas.items),
        "chains_ok": all(c.ok for c in chains),
        "timestamps_utc": all(e.timestamp.endswith("Z") for e in events),
    }


async def test_original_journal_imports_once_with_its_revisions_graph_and_topology(
    backend: StorageSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["import", "--format", "original", str(JOURNAL_ROOT)]) == 0
    captured = capsys.readouterr()
    assert "original chain ok (332 links)" in captured.err
    assert captured.out.strip() == (
        "import: 332 lines, 325 event ids: 325 stored, 7 revisions, 0 duplicates, 0 rejected"
    )
    counts = await _counts(backend)
    assert counts["events"] == 332
    assert counts["ids"] == 325
    assert counts["revisions"] == 7
    assert counts["attempts"] == sorted(
        f"attempt-{a}"
        for a in ("954a34e7", "62b071e3", "164a1fa1", "fc05ea7c", "6add95ed", "d1fbc9ff")
    )
    assert counts["tasks"] == {
        "radix-docs-architecture": [],
        "radix-api-healthcheck": ["radix-docs-architecture"],
        "radix-ci-smoke": ["radix-api-healthcheck", "radix-docs-architecture"],
    }
    assert counts["topology"] is not None
    assert counts["areas"] == 5
    assert counts["chains_ok"]
    assert counts["timestamps_utc"]

    # a second run (the journal file itself this time) stores nothing new
    journal = str(JOURNAL_ROOT / "graph" / "events.ndjson")
    assert await asyncio.to_thread(main, ["import", "--format", "original", journal]) == 0
    assert capsys.readouterr().out.strip() == (
        "import: 332 lines, 325 event ids: 0 stored, 0 revisions, 332 duplicates, 0 rejected"
    )
    assert (await _counts(backend))["events"] == 332


async def test_bad_lines_are_reported_by_number_and_the_rest_imported(
    backend: StorageSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (JOURNAL_ROOT / "graph" / "events.ndjson").read_bytes().splitlines(keepends=True)
    lines[2] = b"{not json\n"  # line 3
    lines[4] = lines[4].replace(b'"event_type":"attempt.created"', b'"event_type":""')  # line 5
    bad = tmp_path / "journal.ndjson"
    bad.write_bytes(b"".join(lines))
    assert await asyncio.to_thread(main, ["import", "--format", "original", str(bad)]) == 1
    captured = capsys.readouterr()
    assert "line 3: not imported: not JSON" in captured.err
    assert "line 5: not imported: event_type" in captured.err
    # line 3's hash is gone and line 5 no longer matches its hash: reported, not refused
    assert "original chain BROKEN" in captured.err
    assert "330 stored" not in captured.out
    assert "2 rejected" in captured.out
    assert (await _counts(backend))["events"] == 330


async def test_an_event_without_a_target_needs_the_flag(
    backend: StorageSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (JOURNAL_ROOT / "graph" / "events.ndjson").read_bytes().splitlines(keepends=True)
    orphan = tmp_path / "orphans.ndjson"
    orphan.write_bytes(lines[9])  # task.completed: no target_id, no attempt to learn it from
    assert await asyncio.to_thread(main, ["import", "--format", "original", str(orphan)]) == 1
    assert "line 1: not imported: no target" in capsys.readouterr().err
    args = ["import", "--format", "original", "--target", "radix", str(orphan)]
    assert await asyncio.to_thread(main, args) == 0
    assert "1 stored" in capsys.readouterr().out


@pytest.mark.parametrize("target_backend", ["ndjson", "postgres"])
async def test_original_postgres_dump_imports_its_175_events(
    target_backend: str,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    restore_dump(postgres_url)  # the original's database, as its operator would restore it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    async with scratch_database(postgres_url, "import") as ours:
        where = ours if target_backend == "postgres" else tmp_path / "log"
        settings = use_backend(monkeypatch, target_backend, where)
        args = ["import", "--format", "original-postgres", postgres_url]
        assert await asyncio.to_thread(main, args) == 0
        captured = capsys.readouterr()
        assert captured.out.strip() == (
            "import: 175 lines, 175 event ids: 175 stored, 0 revisions, 0 duplicates, 0 rejected"
        )
        # its forks (ids 11-14 share a prev_hash) and rewritten rows are reported, not refused
        assert "original chain BROKEN: 175 rows" in captured.err
        assert "fork(s)" in captured.err
        counts = await _counts(settings)
        assert counts["events"] == 175
        assert len(counts["attempts"]) == 6  # type: ignore[arg-type]
        assert counts["chains_ok"]
        assert counts["timestamps_utc"]
        assert await asyncio.to_thread(main, args) == 0
        assert "0 stored, 0 revisions, 175 duplicates" in capsys.readouterr().out
