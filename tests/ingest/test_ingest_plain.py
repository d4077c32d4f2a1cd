"""The plain validator (ingest.plain) accepts what Bundle accepts, with the same entry bytes.

Bodies are generated at the schema's edges with role fields and timestamps of every kind
(the strategies of tests/storage/test_schema_equivalence.py) and parsed by orjson as the
ingest parses them; whatever the plain validator accepts must be accepted by the model
and encode byte for byte as the model does (a refusal only sends the body to the model).
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest.entry import bundle_json, event_json
from ingest.plain import validate_plain
from storage.schema import Bundle
from tests.storage.test_schema_edges import _bundle
from tests.storage.test_schema_equivalence import EQUIVALENCE, _roles, _stamps, dressed


def _model(obj: Any) -> Bundle | None:
    try:
        return Bundle.model_validate(obj)
    except ValidationError:
        return None


@EQUIVALENCE
@given(raw=_bundle, roles=st.lists(_roles, max_size=4), stamps=st.lists(_stamps))
def test_plain_accepts_as_the_model_does_with_the_same_bytes(
    raw: dict[str, Any], roles: list[dict[str, Any]], stamps: list[Any]
) -> None:
    dressed(raw, roles, stamps)
    try:
        body = orjson.dumps(raw)
    except TypeError:  # an integer past 64 bits: no body parses into one
        return
    plain = validate_plain(orjson.loads(body))
    model = _model(orjson.loads(body))
    assert (plain is None) == (model is None)
    if plain is not None and model is not None:
        assert bundle_json(plain) == bundle_json(model)
        assert [event_json(e, i) for i, e in enumerate(plain.events)] == [
            event_json(e, i) for i, e in enumerate(model.events)
        ]


def test_defaults_and_ignored_keys_are_the_models() -> None:
    obj = {
        "target": "t",
        "bundle_id": "b",
        "extra": 1,
        "events": [
            {"event_id": "e", "event_type": "x", "timestamp": "2026-11-28T12:00:00", "payload": {}}
        ],
    }
    plain = validate_plain(obj)
    assert plain is not None
    assert plain.artifacts is None
    assert list(plain.events[0]) == list(Bundle.model_validate(obj).events[0].__dict__)
    assert bundle_json(plain) == Bundle.model_validate(obj).model_dump_json().encode()


def test_what_the_model_refuses_is_left_to_it() -> None:
    assert validate_plain([]) is None
    assert validate_plain({"target": "t", "bundle_id": "b", "events": [1]}) is None
