"""The NDJSON → PostgreSQL move of docs/operations.md, end to end, and back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from leviathan_cp.cli import main
from storage.config import StorageSettings, create_store
from storage.projection import Graph
from tests.lifecycle.conftest import JOURNAL_ROOT, use_backend

pytestmark = pytest.mark.integration


async def _state(settings: StorageSettings) -> tuple[list[dict[str, Any]], Graph]:
    store = create_store(settings)
    await store.open()
    try:
        events = [e.view().model_dump(mode="json") async for e in store.iter_events()]
        return sorted(events, key=lambda e: (e["partition"], e["seq"])), await store.graph()
    finally:
        await store.close()


def _run(*args: str) -> int:
    return main(list(args))


async def test_ndjson_to_postgres_and_back_keeps_every_event_revision_and_node(
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    source = use_backend(monkeypatch, "ndjson", tmp_path / "before")
    assert await asyncio.to_thread(_run, "import", "--format", "original", str(JOURNAL_ROOT)) == 0
    dump = tmp_path / "export.ndjson"
    assert await asyncio.to_thread(_run, "export", "-o", str(dump)) == 0
    assert "export: 332 events" in capsys.readouterr().err
    lines = [orjson.loads(x) for x in dump.read_bytes().splitlines()]
    assert len(lines) == 332
    assert sum(1 for x in lines if x["revision"] > 1) == 7
    # the /v1/events shape plus what a re-import needs
    assert {"target", "bundle_id", "received_at", "revision", "partition", "seq", "hash"} <= set(
        lines[0]
    )

    target = use_backend(monkeypatch, "postgres", postgres_url)
    assert await asyncio.to_thread(_run, "import", str(dump)) == 0
    assert "332 stored" not in capsys.readouterr().out  # 325 new ids + 7 revisions
    assert await asyncio.to_thread(_run, "verify", "--full") == 0
    capsys.readouterr()
    before_events, before_graph = await _state(source)
    after_events, after_graph = await _state(target)
    # same partitions, positions, hashes, arrival times and revisions: the chain is the same
    assert after_events == before_events
    assert after_graph.nodes == before_graph.nodes
    assert after_graph.edges == before_graph.edges
    assert await asyncio.to_thread(_run, "import", str(dump)) == 0
    assert "0 stored, 0 revisions, 332 duplicates" in capsys.readouterr().out

    # and back: PostgreSQL → a fresh NDJSON directory
    back_dump = tmp_path / "back.ndjson"
    assert await asyncio.to_thread(_run, "export", "-o", str(back_dump)) == 0
    back = use_backend(monkeypatch, "ndjson", tmp_path / "after")
    assert await asyncio.to_thread(_run, "import", str(back_dump)) == 0
    assert await asyncio.to_thread(_run, "verify", "--full") == 0
    back_events, back_graph = await _state(back)
    assert back_events == before_events
    assert back_graph.nodes == before_graph.nodes
    assert back_graph.edges == before_graph.edges


async def test_export_resumes_after_a_cursor_and_filters_by_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    use_backend(monkeypatch, "ndjson", tmp_path / "log")
    assert await asyncio.to_thread(_run, "import", "--format", "original", str(JOURNAL_ROOT)) == 0
    radix = tmp_path / "radix.ndjson"
    assert await asyncio.to_thread(_run, "export", "--target", "radix", "-o", str(radix)) == 0
    rows = [orjson.loads(x) for x in radix.read_bytes().splitlines()]
    assert rows
    assert {r["target"] for r in rows} == {"radix"}
    assert len(rows) == 17  # the hand-made bundles 1-3
    capsys.readouterr()
    whole = tmp_path / "whole.ndjson"
    assert await asyncio.to_thread(_run, "export", "-o", str(whole)) == 0
    err = capsys.readouterr().err
    assert "export: 332 events" in err
    # the cursor printed at the end is the log's position: nothing more to export yet
    cursor = err.split("--after ")[1].strip()
    tail = tmp_path / "tail.ndjson"
    assert await asyncio.to_thread(_run, "export", "--after", cursor, "-o", str(tail)) == 0
    assert tail.read_bytes() == b""
    # a cursor taken part-way resumes exactly after the last event written before it
    monkeypatch.setattr("storage.lifecycle.export.PAGE", 100)
    store = create_store(StorageSettings())
    await store.open()
    try:
        first = await store.list_events(limit=250)
    finally:
        await store.close()
    assert first.next_cursor is not None
    assert (
        await asyncio.to_thread(_run, "export", "--after", first.next_cursor, "-o", str(tail)) == 0
    )
    assert tail.read_bytes() == b"".join(whole.read_bytes().splitlines(keepends=True)[250:])
    assert await asyncio.to_thread(_run, "export", "--after", "garbage") == 2
    assert "export: --after:" in capsys.readouterr().err
