"""Whatever the wire schema accepts, both backends store, and the stored graph is the
projection of the stored events.

Bundles are generated at the schema's edges: integers at and around the signed/unsigned
64-bit limits (what orjson hands ingest), deep nesting, any unicode, timestamps in years 1
and 9999 with UTC offsets, payload role fields (attempt_id, task_id, pr_number, status,
depends_on, …) of every JSON type, reused event_ids (duplicates and revisions), artifacts
with extreme sizes. Anything :class:`storage.schema.Bundle` refuses is skipped (ingest
answers 422 for it); U+0000 and lone surrogates are left out because ingest refuses them
before the schema (422 and orjson's 400) and so does the envelope decoder. 40 examples
per backend, 400 under ``LEVIATHAN_LONG=1``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from storage.base import EventStore
from storage.envelope import payloads_of
from storage.ndjson.store import NdjsonStore
from storage.postgres.store import PostgresStore
from storage.projection import PROJECTED_TYPES, Graph, project
from storage.schema import (
    INT64_MAX,
    INT64_MIN,
    ROLE_IDS,
    ROLE_TEXTS,
    Bundle,
    Payload,
    roles_ok,
)
from tests import factories as f

EXAMPLES = 400 if os.environ.get("LEVIATHAN_LONG") == "1" else 40
EDGE_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)

UINT64_MAX = 2**64 - 1
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_ints = st.sampled_from(
    [0, -1, 1, INT64_MIN, INT64_MAX, INT64_MAX + 1, UINT64_MAX, -(2**53), 2**53 + 1]
) | st.integers(INT64_MIN, UINT64_MAX)
_scalars = (
    st.none()
    | st.booleans()
    | _ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
    | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=250, max_size=300)
)
_json: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=12,
)
_valid_ids = st.sampled_from(["att-1", "task-1", "t", "", "x" * 255]) | _ints | st.none()
# mostly ids the schema takes, sometimes any JSON value (refused when not an id)
_ids = st.one_of(_valid_ids, _valid_ids, _valid_ids, _json)


def _nested(depth: int) -> Any:
    return f.nested(depth, ["leaf", 1])


_payload = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(ROLE_IDS, _ids),
        **dict.fromkeys(ROLE_TEXTS, _json),
        "depends_on": st.lists(_ids, max_size=3) | _json,
        "pr_url": _json,
        "reason": _json,
        "title": _json,
        "deep": st.integers(1, 240).map(_nested),  # ingest refuses past 254 in all
        "extra": _json,
    },
)

_offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_moments = st.sampled_from(
    [datetime(1, 1, 1), datetime(1, 1, 1, 23, 59), datetime(999, 12, 31, 23, 59, 59, 999999),
     datetime(1000, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999), datetime(9999, 12, 31)]
) | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))  # fmt: skip
_timestamps = st.one_of(
    _moments.map(lambda d: d.isoformat()),  # naive: UTC
    st.tuples(_moments, _offsets).map(lambda p: p[0].replace(tzinfo=p[1]).isoformat()),
    _moments.map(lambda d: d.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")),
)

_event = st.fixed_dictionaries(
    {
        "event_id": st.sampled_from(["e-1", "e-2", "bootstrap-demo-started"]) | _text,
        "event_type": st.sampled_from(sorted(PROJECTED_TYPES))
        | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=5),
        "timestamp": _timestamps,
        "payload": _payload,
    },
    optional={"actor_id": st.none() | _text},
)
_artifact = st.fixed_dictionaries(
    {
        "sha256": st.text(
            st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=128
        )
    },
    optional={
        "size": st.sampled_from([0, INT64_MAX, INT64_MAX + 1, -1]) | st.none(),
        "artifact_id": _json,
        "kind": st.none() | _text,
    },
)
_bundle = st.fixed_dictionaries(
    {
        "target": st.sampled_from(["demo", "y" * 255]) | _text,
        "bundle_id": st.sampled_from(["b-1", "b-2"]),
        "events": st.lists(_event, min_size=1, max_size=5),
    },
    optional={"artifacts": st.none() | st.lists(_artifact, max_size=2)},
)


def valid(raws: list[dict[str, Any]]) -> list[Bundle]:
    """The bundles the schema accepts (others are 422s, not this property's business)."""
    bundles = []
    for raw in raws:
        try:
            bundles.append(Bundle.model_validate(raw))
        except ValidationError:
            continue
    return bundles


def _difference(a: Any, b: Any, path: str = "") -> str:
    """Where two JSON-like values first differ (for assertion messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a.keys() ^ b.keys())!r}"
        for k in a:
            if a[k] != b[k]:
                return _difference(a[k], b[k], f"{path}.{k}")
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _difference(x, y, f"{path}[{i}]")
    return f"{path}: {a!r:.80} != {b!r:.80}"


async def store_and_check(store: EventStore, bundles: list[Bundle]) -> None:
    before = await store.count_events()
    envelopes = [
        f.envelope(b.model_dump(mode="json"), entry_id=f"{n}-0") for n, b in enumerate(bundles)
    ]
    for env in envelopes:
        payloads_of(env.bundle)  # what the envelope decoder refuses never reaches storage
    result = await store.write_batch(len(bundles) % 3, envelopes)
    assert set(result.outcomes) == {e.entry_id for e in envelopes}
    assert result.written == sum(o.stored + o.revisions for o in result.outcomes.values())
    assert await store.count_events() == before + result.written
    events = [e async for e in store.iter_events()]
    contents = {(e.event_id, e.digest) for e in events}
    assert len(contents) == len(events)  # one row per (event_id, content)
    for event_id in {e.event_id for e in events}:
        revisions = sorted(e.revision for e in events if e.event_id == event_id)
        assert revisions == list(range(1, len(revisions) + 1))
    stored, expected = await store.graph(), project(Graph(), events)
    assert stored.edges == expected.edges
    assert stored.nodes.keys() == expected.nodes.keys()
    for key, props in expected.nodes.items():
        for name, prop in props.items():
            got = stored.nodes[key].get(name)
            assert got == prop, (key, name, _difference(got, prop))
    assert stored == expected
    for partition in await store.partitions():
        assert (await store.verify_chain(partition)).ok


@EDGE_SETTINGS
@given(raws=st.lists(_bundle, min_size=1, max_size=3))
def test_ndjson_stores_whatever_the_schema_accepts(raws: list[dict[str, Any]]) -> None:
    bundles = valid(raws)
    assume(bundles)

    async def run(directory: Path) -> None:
        store = NdjsonStore(directory)
        await store.open()
        try:
            await store_and_check(store, bundles)
            await store_and_check(store, bundles)  # redelivered: all duplicates
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(Path(directory)))


@pytest.mark.integration
@EDGE_SETTINGS
@given(raws=st.lists(_bundle, min_size=1, max_size=3))
def test_postgres_stores_whatever_the_schema_accepts(
    postgres_url: str, raws: list[dict[str, Any]]
) -> None:
    bundles = valid(raws)
    assume(bundles)

    async def run() -> None:
        store = PostgresStore(postgres_url, min_size=1, max_size=2)
        await store.open()
        try:
            await store_and_check(store, bundles)
        finally:
            await store.close()

    asyncio.run(run())


def _body(payload: dict[str, Any], size: int | None = None) -> bytes:
    """A request body as a client sends it: events[3]'s payload and the artifact's size
    spliced in as literal JSON (integers past 64 bits included)."""
    events = [f.event("x.y", {}) for _ in range(3)] + [f.event("attempt.created", {})]
    raw = f.body("t", "b", events, artifacts=[{"sha256": "ab", "size": 0}])
    text = orjson.dumps(raw).decode()
    text = text.replace('"payload":{}}]', f'"payload":{payload_text(payload)}}}]', 1)
    return text.replace('"size":0', f'"size":{"null" if size is None else size}').encode()


def payload_text(payload: dict[str, Any]) -> str:
    return "{" + ",".join(f'"{k}":{v}' for k, v in payload.items()) + "}"


@pytest.mark.parametrize(
    ("payload", "size", "loc"),
    [
        ({"attempt_id": "[1,2]"}, None, ("events", 3, "payload", "attempt_id")),
        ({"task_id": '{"a":1}'}, None, ("events", 3, "payload", "task_id")),
        ({"pr_number": "true"}, None, ("events", 3, "payload", "pr_number")),
        ({"attempt_id": str(2**64)}, None, ("events", 3, "payload", "attempt_id")),
        ({"attempt_id": str(INT64_MAX + 1)}, None, ("events", 3, "payload", "attempt_id")),
        ({"status": '"' + "s" * 256 + '"'}, None, ("events", 3, "payload", "status")),
        ({}, INT64_MAX + 1, ("artifacts", 0, "size")),
        ({}, 2**64, ("artifacts", 0, "size")),
        ({}, 10**30, ("artifacts", 0, "size")),
    ],
)
def test_values_storage_cannot_take_are_refused_with_their_loc(
    payload: dict[str, Any], size: int | None, loc: tuple[Any, ...]
) -> None:
    """What ingest does with a body: orjson parses it (integers past 64 bits become
    doubles), then the schema validates; the error names the field."""
    with pytest.raises(ValidationError) as caught:
        Bundle.model_validate(orjson.loads(_body(payload, size)))
    assert [e["loc"] for e in caught.value.errors()] == [loc]


def test_integers_past_64_bits_elsewhere_in_a_payload_are_stored_as_doubles() -> None:
    """orjson reads an integer literal outside [-2**63, 2**64) as the nearest double (and
    refuses one past the double range, a 400): nothing of it can fail storage."""
    data = orjson.loads(_body({"files": str(2**64), "neg": str(-(2**63) - 1)}))
    bundle = Bundle.model_validate(data)
    assert bundle.events[3].payload == {"files": float(2**64), "neg": float(-(2**63) - 1)}
    payloads_of(bundle)  # serialisable: what the chain hashes and storage writes
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(_body({"files": "1" + "0" * 400}))


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("0001-01-01T00:00:00", "0001-01-01T00:00:00Z"),
        ("0001-01-01T01:30:00+01:00", "0001-01-01T00:30:00Z"),
        ("9999-12-31T22:00:00-01:00", "9999-12-31T23:00:00Z"),
        ("0999-06-01T12:00:00.5Z", "0999-06-01T12:00:00.500000Z"),
        ("0001-01-01T00:30:00+01:00", None),  # year 0 in UTC
        ("9999-12-31T23:30:00-01:00", None),  # year 10000 in UTC
    ],
)
def test_timestamps_stay_within_years_1_to_9999_in_utc(text: str, stored: str | None) -> None:
    raw = f.body("t", "b", [dict(f.event("x.y", {}), timestamp=text)])
    if stored is None:
        with pytest.raises(ValidationError) as caught:
            Bundle.model_validate(raw)
        assert [e["loc"] for e in caught.value.errors()] == [("events", 0, "timestamp")]
    else:
        assert Bundle.model_validate(raw).model_dump(mode="json")["events"][0]["timestamp"] == (
            stored
        )


def test_ingest_answers_422_naming_the_payload_field() -> None:
    """Through the ingest's own body parser: the error's loc reaches the client as is."""
    from ingest.body import parse_bundle
    from webcore.errors import Unprocessable

    with pytest.raises(Unprocessable) as caught:
        parse_bundle(_body({"attempt_id": '["a"]'}), 100)
    assert [e["loc"] for e in caught.value.errors] == [["events", 3, "payload", "attempt_id"]]
    with pytest.raises(Unprocessable) as caught:
        parse_bundle(_body({}, 2**63), 100)
    assert [e["loc"] for e in caught.value.errors] == [["artifacts", 0, "size"]]


@settings(max_examples=300, deadline=None)
@given(payload=_payload)
def test_bundle_fast_check_agrees_with_the_payload_rules(payload: dict[str, Any]) -> None:
    """Bundle checks role fields inline (roles_ok) and runs the Payload validators only to
    name a failure: the two must accept exactly the same payloads."""
    try:
        TypeAdapter(Payload).validate_python(payload)
        valid_payload = True
    except ValidationError:
        valid_payload = False
    assert roles_ok([payload]) == valid_payload
