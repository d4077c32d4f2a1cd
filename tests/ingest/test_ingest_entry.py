"""The fast envelope encoder (ingest.entry) writes what storage.envelope.encode writes.

The ingest handler serialises bundles with orjson instead of pydantic; the consumer and
the hash chain must not be able to tell. Every generated valid bundle gives byte-identical
``bundle`` JSON and an envelope that decodes to the same Bundle.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.entry import bundle_json, entry_fields
from storage.envelope import decode, encode
from storage.schema import ROLE_IDS, ROLE_TEXTS, Bundle
from tests.factories import nested
from webcore.errors import Unprocessable

# U+0000 is refused at ingest (422) and by the envelope decoder, lone surrogates cannot come
# out of orjson.loads; everything else is fair.
alphabet = st.characters(codec="utf-8", exclude_characters="\x00")


def text(min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=min_size, max_size=max_size)


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text()
)
json_any = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
offsets = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=7, minutes=30))]
)


@st.composite
def timestamps(draw: st.DrawFn) -> Any:
    moment = draw(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30)))
    tz = draw(offsets)
    as_text = draw(st.booleans())
    value = moment.replace(tzinfo=tz)
    if not as_text:
        return value.isoformat()
    text = value.isoformat()
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


ids = text(min_size=1, max_size=30)
events = st.fixed_dictionaries(
    {
        "event_id": ids,
        "event_type": ids,
        "timestamp": timestamps(),
        # any JSON under any key but the role fields, which the schema types (their bounds
        # have their own property test in tests/storage/test_schema_edges.py)
        "payload": st.dictionaries(
            text(max_size=8).filter(lambda k: k not in ROLE_IDS + ROLE_TEXTS), json_any, max_size=5
        ),
    },
    optional={"actor_id": st.none() | text(max_size=20), "extra": json_any},
)
artifacts = st.fixed_dictionaries(
    {"sha256": text(min_size=1, max_size=64)},
    optional={
        "kind": st.none() | text(max_size=10),
        "uri": st.none() | text(max_size=30),
        "size": st.none() | st.integers(0, 2**40),
        "mine": json_any,
    },
)
bundles = st.fixed_dictionaries(
    {"target": ids, "bundle_id": ids, "events": st.lists(events, max_size=5)},
    optional={"artifacts": st.none() | st.lists(artifacts, max_size=3), "unknown": json_any},
)


@settings(max_examples=300, deadline=None)
@given(bundles)
def test_bundle_json_is_model_dump_json(obj: dict[str, Any]) -> None:
    # through orjson bytes first, as the handler sees a body
    bundle = Bundle.model_validate(orjson.loads(orjson.dumps(obj)))
    assert bundle_json(bundle) == bundle.model_dump_json().encode()


@settings(max_examples=100, deadline=None)
@given(bundles)
def test_entry_decodes_like_the_storage_encoder(obj: dict[str, Any]) -> None:
    bundle = Bundle.model_validate(obj)
    fast = entry_fields(bundle, "tok-abc", received_at=1764331200.25)
    reference = encode(bundle, "tok-abc", received_at=1764331200.25)
    assert fast == reference
    assert decode("1-0", fast) == decode("1-0", reference)


def test_microseconds_and_offsets_normalised_like_format_timestamp() -> None:
    stamps = [
        "2026-11-28T12:00:00Z",
        "2026-11-28T12:00:00.000000Z",
        "2026-11-28T12:00:00.5+02:00",
        "2026-11-28T12:00:00.123456",
        "2026-11-28 23:59:59.999999-05:00",
    ]
    evs = [
        {"event_id": f"e{i}", "event_type": "t", "timestamp": s, "payload": {}}
        for i, s in enumerate(stamps)
    ]
    bundle = Bundle.model_validate({"target": "t", "bundle_id": "b", "events": evs})
    written = [e["timestamp"] for e in orjson.loads(bundle_json(bundle))["events"]]
    assert written == [
        "2026-11-28T12:00:00Z",
        "2026-11-28T12:00:00Z",
        "2026-11-28T10:00:00.500000Z",
        "2026-11-28T12:00:00.123456Z",
        "2026-11-29T04:59:59.999999Z",
    ]


def _bundle_nested(depth: int) -> Bundle:
    """One event whose payload is ``depth`` levels of ``{"a": ...}`` around ``1``."""
    ev = {"event_id": "e", "event_type": "t", "timestamp": "2026-11-28T12:00:00Z"}
    return Bundle.model_validate(
        {"target": "t", "bundle_id": "b", "events": [{**ev, "payload": nested(depth, 1)}]}
    )


def test_payload_deeper_than_any_serializer_writes_is_422() -> None:
    # orjson.dumps stops at 254 levels, pydantic's to_json as well
    with pytest.raises(Unprocessable):
        entry_fields(_bundle_nested(300), "tok", received_at=1.5)


def test_every_depth_ingest_writes_the_consumer_decodes() -> None:
    depth = 190
    while True:  # the deepest payload ingest still answers 202 for
        try:
            entry_fields(_bundle_nested(depth + 1), "tok", received_at=1.5)
        except Unprocessable:
            break
        depth += 1
    assert depth > 200  # beyond pydantic's JSON parser limit, which the decoder once used
    envelope = decode("1-0", entry_fields(_bundle_nested(depth), "tok", received_at=1.5))
    assert envelope.bundle == _bundle_nested(depth)
