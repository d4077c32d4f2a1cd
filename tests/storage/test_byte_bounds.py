"""Every indexed key fits both backends, whatever the characters: byte edges in UTF-8.

PostgreSQL's btree refuses an index row over 2,704 bytes, SQLite has no such limit, so a
key bounded only in characters made the backends disagree (a topology key of 255 + 600
four-byte characters: ``index row size 3448 exceeds … 2704`` on PostgreSQL, stored by
NDJSON). Here strings of four-byte characters (and ASCII padding that lands them exactly
on a byte bound) fill every field the schema bounds and every key the write paths index:
ids at 254-256 characters, topology items around :data:`storage.topology.MAX_ITEM_BYTES`
and :data:`storage.topology.MAX_ITEM` characters, dependency ends at 255. Whatever
:class:`storage.schema.Bundle` accepts, both backends store, and their topology indexes
equal the pure rules'.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from storage.base import EventStore
from storage.ndjson.store import NdjsonStore
from storage.postgres.store import PostgresStore
from storage.schema import MAX_ID_LENGTH, Bundle
from storage.topology import AREA, MAX_ITEM, MAX_ITEM_BYTES, item_of, rows_of_envelopes
from tests import factories as f
from tests.storage.test_topology import index_from_rows, index_of

EXAMPLES = 200 if os.environ.get("LEVIATHAN_LONG") == "1" else 20
BYTE_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,  # long strings are the point
        HealthCheck.data_too_large,
    ],
)
WIDE = st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF, categories=["Co", "So", "Lo"])


def _edge(chars: int, wide: int) -> st.SearchStrategy[str]:
    """``chars`` characters of which ``wide`` are four-byte, the rest ASCII."""
    return st.text(WIDE, min_size=wide, max_size=wide).map(lambda w: "a" * (chars - wide) + w)


# ids at and around the schema's 255 characters, all four-byte or ASCII-padded
_ids = st.sampled_from([254, 255, 256]).flatmap(lambda n: _edge(n, n)) | st.sampled_from(
    [1, 128, 255]
).flatmap(lambda n: _edge(255, n))
# items at the byte bound (1535, 1536, 1537 bytes) and at the character bound (600, 601)
_items = (
    st.sampled_from([-1, 0, 1]).flatmap(
        lambda d: _edge(MAX_ITEM_BYTES // 4 + d, MAX_ITEM_BYTES // 4 + d)
    )
    | st.sampled_from([MAX_ITEM_BYTES - 1, MAX_ITEM_BYTES, MAX_ITEM_BYTES + 1]).flatmap(
        # k four-byte characters plus ASCII: 4k + (n - k) bytes, n characters
        lambda b: _edge(b - 3 * 300, 300)
    )
    | st.sampled_from([MAX_ITEM, MAX_ITEM + 1]).flatmap(lambda n: _edge(n, n))
)
_targets = st.sampled_from(["repo-a", "repo-b"])


@st.composite
def _bundle(draw: st.DrawFn) -> dict[str, Any]:
    target = draw(_targets)
    events = []
    for n in range(draw(st.integers(1, 6))):
        kind = draw(
            st.sampled_from(
                [
                    "topo.area.discovered",
                    "topo.subsystem.discovered",
                    "topo.dependency.discovered",
                    "topo.indexed",
                    "attempt.started",
                    "task.created",
                ]
            )
        )
        payload: dict[str, Any] = {"target_id": draw(_ids)}
        if kind == "topo.area.discovered":
            payload["area_id"] = draw(_items)
        elif kind == "topo.subsystem.discovered":
            payload["subsystem_id"] = draw(_items)
        elif kind == "topo.dependency.discovered":
            payload.update(from_subsystem_id=draw(_ids), to_subsystem_id=draw(_ids))
        else:
            payload.update(attempt_id=draw(_ids), task_id=draw(_ids), status=draw(_ids))
        events.append(
            f.event(
                kind,
                payload,
                at=n,
                event_id=draw(_ids | st.just(f"e-{n}")),
                actor_id=draw(st.none() | _ids),
            )
        )
    return f.body(target, draw(_ids), events)


_W = "\U0001f600"
# the worst case of each key, always tried: a 255-character four-byte target beside an
# item at each bound, and a dependency of two 255-character four-byte ends
WORST = [
    f.body(
        "repo-a",
        _W * 255,
        [
            f.event(kind, {"target_id": _W * 255, field: item}, at=n, event_id=_W * 254 + str(n))
            for n, (kind, field, item) in enumerate(
                [
                    ("topo.area.discovered", "area_id", _W * 600),
                    ("topo.area.discovered", "area_id", _W * (MAX_ITEM_BYTES // 4)),
                    ("topo.subsystem.discovered", "subsystem_id", "a" * 600),
                    ("topo.dependency.discovered", "from_subsystem_id", _W * 255),
                    ("attempt.started", "attempt_id", _W * 255),
                ]
            )
        ],
    )
]
WORST[0]["events"][3]["payload"]["to_subsystem_id"] = _W * 255
WORST[0]["events"][4]["payload"].update(task_id=_W * 255, status=_W * 255)


def _valid(raws: list[dict[str, Any]]) -> list[Bundle]:
    out = []
    for raw in raws:
        try:
            out.append(Bundle.model_validate(raw))
        except ValidationError:
            continue  # ingest answers 422: not this property's business
    return out


async def _store_all(store: EventStore, bundles: list[Bundle]) -> None:
    before = await store.count_events()
    envelopes = [f.envelope(b.model_dump(mode="json"), entry_id=f"{n}-0") for n, b in
                 enumerate(bundles)]  # fmt: skip
    result = await store.write_batch(0, envelopes)
    assert await store.count_events() == before + result.written
    # the index as the pure rules fold every event stored so far
    events = [e async for e in store.iter_events()]
    raws = [{"event_id": e.event_id, "event_type": e.event_type, "timestamp": e.timestamp,
             "actor_id": e.actor_id, "payload": e.payload} for e in events]  # fmt: skip
    rows = rows_of_envelopes([f.envelope(f.body("repo-a", "all", raws))]) if raws else []
    assert await index_of(store) == index_from_rows(sorted(rows, key=lambda r: r.key))


@BYTE_SETTINGS
@given(raws=st.lists(_bundle(), min_size=1, max_size=3))
@example(raws=WORST)
def test_ndjson_stores_every_accepted_key_at_the_byte_edges(raws: list[dict[str, Any]]) -> None:
    bundles = _valid(raws)

    assert bundles or raws is not WORST

    async def run(directory: Path) -> None:
        store = NdjsonStore(directory)
        await store.open()
        try:
            await _store_all(store, bundles)
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(Path(directory)))


@pytest.mark.integration
@BYTE_SETTINGS
@given(raws=st.lists(_bundle(), min_size=1, max_size=3))
@example(raws=WORST)
def test_postgres_stores_every_accepted_key_at_the_byte_edges(
    postgres_url: str, raws: list[dict[str, Any]]
) -> None:
    bundles = _valid(raws)

    async def run() -> None:
        store = PostgresStore(postgres_url, min_size=1, max_size=2)
        await store.open()
        try:
            await _store_all(store, bundles)
        finally:
            await store.close()

    asyncio.run(run())


def test_items_are_bounded_in_bytes_not_only_characters() -> None:
    wide = "\U0001f600"
    assert item_of(AREA, {"area_id": wide * (MAX_ITEM_BYTES // 4)}, "e") == wide * 384
    assert item_of(AREA, {"area_id": wide * (MAX_ITEM_BYTES // 4 + 1)}, "e") == "event:e"
    assert item_of(AREA, {"area_id": "a" * MAX_ITEM}, "e") == "a" * MAX_ITEM
    assert item_of(AREA, {"area_id": "a" * (MAX_ITEM + 1)}, "e") == "event:e"
    ends = {"from_subsystem_id": wide * MAX_ID_LENGTH, "to_subsystem_id": wide * MAX_ID_LENGTH}
    assert item_of("dependency", ends, "e") == "event:e"  # 2,044 bytes


async def test_a_big_bundle_with_a_wide_topology_key_is_stored_whole(store: EventStore) -> None:
    """3,000 events, one of them a topology event keyed by 255 + 600 four-byte characters
    (the btree row PostgreSQL refused at 3,448 bytes), written as the consumer writes a
    chunked bundle: every event stored on both backends, the item keyed by its event."""
    wide = "\U0001f600"
    events = [f.event("file.discovered", {"path": f"src/{i}.py"}, event_id=f"file-{i}")
              for i in range(3_000)]  # fmt: skip
    events[1_234] = f.event(
        "topo.area.discovered",
        {"target_id": wide * 255, "area_id": wide * 600},
        event_id="wide-area",
    )
    raw = f.body("repo-wide", "bootstrap-wide", events)
    chunks = [f.body("repo-wide", "bootstrap-wide", events[i : i + 512])
              for i in range(0, 3_000, 512)]  # fmt: skip
    result = await store.write_batch(
        0, [f.envelope(c, entry_id=f"{n + 1}-0") for n, c in enumerate(chunks)]
    )
    assert result.written == 3_000
    assert await store.count_events() == 3_000
    [item] = (await store.topology_items(wide * 255, AREA)).items
    assert item == {"target_id": wide * 255, "area_id": wide * 600}
    # the same bundle again, whole: every event a duplicate, nothing refused
    again = await store.write_batch(0, [f.envelope(raw, entry_id="9-0")])
    assert (again.written, again.duplicates) == (0, 3_000)


# 520 three-byte characters: 1,560 bytes, over the byte bound but within 600 characters,
# so an index written before the bound (and PostgreSQL, with a short target) keyed by it
_OLD_ITEM = "\u20ac" * 520


def _wide_run() -> list[dict[str, Any]]:
    return [
        f.event("topo.area.discovered", {"target_id": "repo-a", "area_id": _OLD_ITEM, "n": n},
                at=n, event_id=f"wide-{n}")
        for n in range(3)
    ] + [f.event("topo.area.discovered", {"target_id": "repo-a", "area_id": "docs"},
                 event_id="narrow")]  # fmt: skip


async def test_postgres_migration_rekeys_items_indexed_before_the_byte_bound(
    postgres_url: str,
) -> None:
    import asyncpg

    from storage.postgres import migrate

    events = _wide_run()
    store = PostgresStore(postgres_url, min_size=1, max_size=2)
    await store.open()
    try:
        await store.write_batch(0, [f.envelope(f.body("repo-a", "b", events))])
        expected = await index_of(store)
        assert len(expected[("repo-a", AREA)]) == 4  # each wide event keyed by itself
    finally:
        await store.close()
    con = await asyncpg.connect(postgres_url)
    try:
        # as the rules before the bound indexed it: one row, the newest event, by its item
        await con.execute("DELETE FROM topology WHERE item LIKE 'event:%'")
        await con.execute(
            "INSERT INTO topology SELECT target, kind, $1, version_ts, event_id, digest, payload"
            " FROM (SELECT 'repo-a' AS target, 'area' AS kind, ts_text AS version_ts, event_id,"
            " digest, payload::jsonb AS payload FROM events WHERE event_id = 'wide-2') s",
            _OLD_ITEM,
        )
        await con.execute("DELETE FROM schema_migrations WHERE version LIKE '0006%'")
        assert await migrate.apply(con) == ["0006_topology_item_bytes"]
    finally:
        await con.close()
    again = PostgresStore(postgres_url, min_size=1, max_size=2)
    await again.open()
    try:
        assert await index_of(again) == expected
    finally:
        await again.close()


async def test_ndjson_index_rekeys_items_indexed_before_the_byte_bound(tmp_path: Path) -> None:
    import sqlite3

    from storage.ndjson import index as ndjson_index

    store = NdjsonStore(tmp_path)
    await store.open()
    try:
        await store.write_batch(0, [f.envelope(f.body("repo-a", "b", _wide_run()))])
        expected = await index_of(store)
    finally:
        await store.close()
    con = sqlite3.connect(tmp_path / ndjson_index.INDEX_FILE)
    con.execute("DELETE FROM topology WHERE item LIKE 'event:wide-%' AND item != 'event:wide-2'")
    con.execute("UPDATE topology SET item = ? WHERE item = 'event:wide-2'", (_OLD_ITEM,))
    con.execute("PRAGMA user_version = 0")  # an index file from before the bound
    con.commit()
    con.close()
    again = NdjsonStore(tmp_path)
    await again.open()
    try:
        assert await index_of(again) == expected
    finally:
        await again.close()
