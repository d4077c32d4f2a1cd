"""COPY text encoding of event rows (storage.postgres.copy): escapes, and a round trip.

The unit tests pin the escapes of PostgreSQL's text format; the property test sends
arbitrary strings (every character but NUL, which ingest refuses) through a real ``COPY
FROM STDIN`` and reads back exactly what was encoded, so no value can be cut, merged
with the next column or turned into NULL.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.chain import payload_json
from storage.postgres.copy import encode_rows, field, json_field
from storage.postgres.migrate import migrate
from storage.postgres.write import COPY_COLUMNS


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, "\\N"),
        ("\\N", "\\\\N"),
        ("a\tb", "a\\tb"),
        ("line\nnext\r", "line\\nnext\\r"),
        ("\\.", "\\\\."),
        ("é ✓ 🐍", "é ✓ 🐍"),
    ],
)
def test_field_escapes_what_copy_text_gives_a_meaning(value: str | None, encoded: str) -> None:
    assert field(value) == encoded


def test_plain_field_is_passed_through_uncopied() -> None:
    value = "attempt-123"
    assert field(value) is value


def test_json_field_doubles_only_backslashes() -> None:
    data = payload_json({"path": "C:\\tmp\\x", "quote": '"', "tab": "\t"})
    assert json_field(data) == data.decode().replace("\\", "\\\\")
    assert "\t" not in json_field(data)  # JSON escapes control characters itself


# Characters COPY gives a meaning to, mixed with any other non-NUL character.
_SPECIALS = st.sampled_from(["\\", "\t", "\n", "\r", "N", "."])  # "\\N", "\\." arise
_TEXT = st.text(
    alphabet=_SPECIALS | st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20
)
_ROW = st.tuples(_TEXT.filter(bool), st.none() | _TEXT, _TEXT, st.none() | _TEXT)


def _rows(drawn: list[tuple[str, str | None, str, str | None]]) -> list[tuple[Any, ...]]:
    when = datetime(2026, 11, 28, 9, 0, 0, 123456, tzinfo=UTC)
    return [
        (3, seq, f"{seq}:{eid}", eid, when, "2026-11-28T09:00:00.123456Z", actor,
         payload_json({text: [text, actor]}), text, text, "2026-11-28T09:00:01Z",
         "0" * 64, "1" * 64, "2" * 64, actor, text, seq % 3 + 1)
        for seq, (eid, actor, text, _) in enumerate(drawn, 1)
    ]  # fmt: skip


async def _round_trip(dsn: str, rows: list[tuple[Any, ...]]) -> list[asyncpg.Record]:
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("CREATE TEMP TABLE IF NOT EXISTS t (LIKE events INCLUDING DEFAULTS)")
        await con.execute("TRUNCATE t")
        await con.copy_to_table("t", source=io.BytesIO(encode_rows(rows)), columns=COPY_COLUMNS)
        return await con.fetch(f"SELECT {', '.join(COPY_COLUMNS)} FROM t ORDER BY seq")
    finally:
        await con.close()


@pytest.fixture
def events_dsn(postgres_url: str) -> str:
    asyncio.run(migrate(postgres_url))
    return postgres_url


@pytest.mark.integration
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=st.lists(_ROW, min_size=1, max_size=30))
def test_any_text_round_trips_through_copy(
    events_dsn: str, drawn: list[tuple[str, str | None, str, str | None]]
) -> None:
    rows = _rows(drawn)
    stored = asyncio.run(_round_trip(events_dsn, rows))
    assert len(stored) == len(rows)
    for row, back in zip(rows, stored, strict=True):
        expected = list(row)
        expected[7] = row[7].decode()  # json column, read back as its exact text
        assert list(back) == expected
