"""The wire models accept, refuse and normalise exactly as the reference models do.

:mod:`tests.storage.reference_schema` is a frozen copy of the models before the role-field
bounds and UTC normalisation moved into pydantic-core. Bundles are generated at the
schema's edges (the strategies of tests/storage/test_schema_edges.py) plus role fields
of every JSON type, as dicts and as the bodies a client sends (orjson-parsed, so
integers past 64 bits become doubles); for each, both models must give the same errors
(type, loc, msg, in order) or the same normalised JSON, at ingest and when a consumer
decodes a stream entry (STREAM_DECODE, which skips the role check).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from ingest.body import parse_bundle
from ingest.entry import bundle_json
from storage import schema
from tests.storage import reference_schema as reference
from tests.storage.test_schema_edges import _bundle, _json
from webcore.errors import Unprocessable

EQUIVALENCE = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
_role_value = (
    _json
    | st.integers(-(2**64), 2**65)
    | st.sampled_from(["x" * 255, "x" * 256, "\U0001f600" * 255, "\U0001f600" * 256])
    | st.floats()
    | st.booleans()
)
_roles = st.dictionaries(
    st.sampled_from([*schema.ROLE_IDS, *schema.ROLE_TEXTS, "depends_on", "other"]),
    _role_value,
    max_size=4,
)
_stamps = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "2026-11-28T12:00:00Z",
            "2026-11-28T12:00:00.000000Z",
            "2026-11-28T12:00:00z",
            "2026-11-28T12:00:00+00:00",
            "2026-11-28T12:00:00-00:00",
            "2026-11-28T12:00:00+23:59",
            "2026-11-28T12:00:00+24:00",
            "2026-11-28",
            "2026-11-28 12:00",
            "1764331200",
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59.999999-00:01",
            "",
            "now",
        ]
    ),
    st.none(),
    st.booleans(),
)


def _outcome(model: Any, raw: Any, context: Any = None) -> tuple[str, Any]:
    try:
        bundle = model.model_validate(raw, context=context)
    except ValidationError as exc:
        return "refused", [(e["type"], e["loc"], e["msg"]) for e in exc.errors(include_url=False)]
    return "accepted", bundle.model_dump_json()


def _same(raw: Any) -> None:
    for context in (None, schema.STREAM_DECODE):
        mine = _outcome(schema.Bundle, raw, context)
        theirs = _outcome(reference.Bundle, raw, context)
        assert mine == theirs
        if mine[0] == "accepted":
            # the ingest's own encoder writes the bytes pydantic's serializer does
            bundle = schema.Bundle.model_validate(raw, context=context)
            # (an integer past 64 bits in a payload: no body parses into one)
            with contextlib.suppress(orjson.JSONEncodeError):
                assert bundle_json(bundle).decode() == mine[1]
            ref = reference.Bundle.model_validate(raw, context=context)
            assert ref.model_dump() == bundle.model_dump()


def _as_body(raw: dict[str, Any]) -> bytes | None:
    try:
        return orjson.dumps(raw)
    except TypeError:  # an integer past 64 bits: clients send it, orjson cannot write it
        return None


def dressed(raw: dict[str, Any], roles: list[dict[str, Any]], stamps: list[Any]) -> None:
    """``raw``'s events given the role fields (round robin) and timestamps drawn."""
    events = raw["events"]
    for i, extra in enumerate(roles):
        events[i % len(events)]["payload"].update(extra)
    for i, stamp in enumerate(stamps[: len(events)]):
        events[i]["timestamp"] = stamp


@EQUIVALENCE
@given(raw=_bundle)
def test_edge_bundles_validate_as_the_reference_does(raw: dict[str, Any]) -> None:
    _same(raw)


@EQUIVALENCE
@given(raw=_bundle, roles=st.lists(_roles, min_size=1, max_size=4), stamps=st.lists(_stamps))
def test_role_fields_and_timestamps_validate_as_the_reference_does(
    raw: dict[str, Any], roles: list[dict[str, Any]], stamps: list[Any]
) -> None:
    dressed(raw, roles, stamps)
    _same(raw)
    body = _as_body(raw)
    if body is not None:
        _same(orjson.loads(body))


@EQUIVALENCE
@given(raw=_bundle, roles=st.lists(_roles, min_size=1, max_size=4))
def test_ingest_answers_as_the_reference_would(
    raw: dict[str, Any], roles: list[dict[str, Any]]
) -> None:
    """Through the ingest's body parser: the 422's errors are the reference's, in order."""
    events = raw["events"]
    for i, extra in enumerate(roles):
        events[i % len(events)]["payload"].update(extra)
    body = _as_body(raw)
    if body is None:
        return
    kind, expected = _outcome(reference.Bundle, orjson.loads(body))
    if kind == "accepted":
        assert bundle_json(parse_bundle(body, 100)).decode() == expected
        return
    with pytest.raises(Unprocessable) as caught:
        parse_bundle(body, 100)
    assert caught.value.errors == [{"loc": list(loc), "msg": msg} for _, loc, msg in expected]


@pytest.mark.parametrize(
    "payload",
    [
        {"attempt_id": 2**63},
        {"attempt_id": -(2**63) - 1},
        {"pr_number": True},
        {"task_id": 1.0},
        {"artifact_id": "x" * 256, "status": "s" * 256, "target_id": [1]},
        {"target": {"a": 1}, "sha256": None, "status": 5},
        {"attempt_id": None, "task_id": "", "target_id": -(2**63), "pr_number": 2**63 - 1},
    ],
)
def test_fixed_role_cases_validate_as_the_reference_does(payload: dict[str, Any]) -> None:
    raw = {
        "target": "t",
        "bundle_id": "b",
        "events": [
            {"event_id": "e", "event_type": "x", "timestamp": "2026-11-28T12:00:00", "payload": p}
            for p in ({"ok": 1}, payload, dict(payload))
        ],
    }
    _same(raw)
    mixed = {**raw, "artifacts": [{"sha256": "", "size": -1}]}
    _same(mixed)


_REFERENCE_EVENTS = TypeAdapter(list[reference.WireEvent])


def _events_outcome(validate: Any, events: Any) -> tuple[str, Any]:
    try:
        got = validate(events)
    except ValidationError as exc:
        return "refused", [(e["type"], e["loc"], e["msg"]) for e in exc.errors(include_url=False)]
    return "accepted", [e.model_dump() for e in got]


@EQUIVALENCE
@given(raw=_bundle, stamps=st.lists(_stamps))
def test_event_chunks_validate_as_the_reference_does(
    raw: dict[str, Any], stamps: list[Any]
) -> None:
    """A large bundle's events are validated a chunk at a time (ingest.body): same errors."""
    events = raw["events"]
    for i, stamp in enumerate(stamps[: len(events)]):
        events[i]["timestamp"] = stamp
    assert _events_outcome(schema.validate_events, events) == _events_outcome(
        _REFERENCE_EVENTS.validate_python, events
    )


def test_a_bundle_built_in_python_from_event_objects() -> None:
    """``Bundle(events=[WireEvent, …])`` (benchmarks and tools build bundles so) keeps its
    events and still checks their role fields."""
    from datetime import UTC, datetime

    import pydantic

    from storage.schema import Bundle, WireEvent

    good = WireEvent.model_validate(
        {
            "event_id": "e1",
            "event_type": "attempt.started",
            "timestamp": "2026-11-28T09:00:00Z",
            "payload": {"attempt_id": "att-1"},
        }
    )
    bundle = Bundle(target="t", bundle_id="b", events=[good])
    assert bundle.events == [good]
    bad = WireEvent.model_construct(
        event_id="e2",
        event_type="attempt.started",
        timestamp=datetime(2026, 11, 28, tzinfo=UTC),
        actor_id=None,
        payload={"attempt_id": ["not", "an", "id"]},
    )
    with pytest.raises(pydantic.ValidationError) as info:
        Bundle(target="t", bundle_id="b", events=[good, bad])
    assert info.value.errors()[0]["loc"] == ("events", 1, "payload", "attempt_id")
