"""The ingest body path (gunzip → JSON → Bundle) under hostile bytes.

Anything a client sends ends as a Bundle or as an IngestError with a 4xx status: never
another exception (which the app would turn into a 500).
"""

from __future__ import annotations

import gzip
import resource
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.body import parse_bundle
from ingest.upload import gunzip
from tests.fuzz.conftest import FUZZ
from webcore.errors import IngestError

LIMIT = 10 * 1024 * 1024
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50)
)
json_any = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5)
    ),
    max_leaves=30,
)
field_names = st.sampled_from(
    [
        "target",
        "bundle_id",
        "events",
        "artifacts",
        "event_id",
        "event_type",
        "timestamp",
        "payload",
        "actor_id",
    ]
)
event_like = st.dictionaries(field_names, json_any, max_size=6)
bundle_like = st.fixed_dictionaries(
    {},
    optional={
        "target": json_any,
        "bundle_id": json_any,
        "events": st.lists(event_like, max_size=4) | json_any,
        "artifacts": st.lists(st.dictionaries(st.text(max_size=8), json_any, max_size=4))
        | json_any,
    },
)


def _outcome(body: bytes) -> int:
    error: IngestError | None = None
    try:
        parse_bundle(body, max_events=10_000)
    except IngestError as exc:
        error = exc
    if error is None:
        return 200
    assert 400 <= error.status < 500, error
    assert error.detail
    assert "\n" not in error.detail
    return error.status


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_never_escape(raw: bytes) -> None:
    assert _outcome(raw) in (200, 400, 413, 422)


@FUZZ
@given(bundle_like)
def test_wrong_types_are_4xx(obj: dict[str, Any]) -> None:
    _outcome(orjson.dumps(obj))


@FUZZ
@given(st.binary(min_size=1, max_size=40))
def test_invalid_utf8_in_strings_is_400(junk: bytes) -> None:
    body = b'{"target":"t","bundle_id":"\xff' + junk + b'","events":[]}'
    assert _outcome(body) == 400


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_deep_nesting(depth: int) -> None:
    body = b'{"target":"t","bundle_id":"b","events":[{"payload":' + b"[" * depth
    body += b"]" * depth + b"}]}"
    assert _outcome(body) in (400, 422)


def test_huge_strings_are_422() -> None:
    ev = {
        "event_id": "x" * 1_000_000,
        "event_type": "e" * 10_000,
        "timestamp": "2026-11-28",
        "payload": {},
    }
    body = orjson.dumps({"target": "t", "bundle_id": "b" * 300, "events": [ev]})
    assert _outcome(body) == 422


def test_gzip_bomb_is_cut_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (1024 * 1024 * 1024), compresslevel=9)  # 1 GiB of zeros
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(IngestError) as info:
        gunzip(bomb, LIMIT)
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert info.value.status == 413
    assert grew_kib < 64 * 1024  # inflating stops at the limit instead of holding 1 GiB


@FUZZ
@given(st.binary(max_size=500))
def test_corrupt_gzip_is_400(raw: bytes) -> None:
    status = 200
    try:
        gunzip(b"\x1f\x8b" + raw, LIMIT)
    except IngestError as exc:
        status = exc.status
    assert status in (200, 400)
