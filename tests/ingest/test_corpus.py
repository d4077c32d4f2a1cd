"""The ingest answers, queues and counts exactly what it did before its hot path was reworked.

Every case of :mod:`tests.ingest.corpus_support` (escapes, NUL, UTC offsets, naive and epoch
timestamps, 2^63 ids, big integers, NaN, 1e400, duplicate keys, bad tokens, …) goes through
the real app; its status, response body and stream entries must equal those recorded in
``tests/ingest/corpus/expected.json``, and so must the ``/metrics`` families, label sets,
buckets and counts after the whole sequence.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from tests.ingest.corpus_support import EXPECTED, bodies_digest, observe


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    recorded: dict[str, Any] = orjson.loads(EXPECTED.read_bytes())
    return recorded


def test_the_cases_are_the_recorded_ones(expected: dict[str, Any]) -> None:
    assert bodies_digest() == expected["requests"]
    assert len(expected["cases"]) >= 27
    statuses = {c["status"] for c in expected["cases"]}
    assert {202, 400, 401, 415, 422} <= statuses
    assert base64.b64decode(expected["requests"][0]["body"]).startswith(b"{")


async def test_every_case_answers_and_queues_as_recorded(expected: dict[str, Any]) -> None:
    got = await observe()
    assert [c["name"] for c in got["cases"]] == [c["name"] for c in expected["cases"]]
    for mine, theirs in zip(got["cases"], expected["cases"], strict=True):
        assert mine == theirs, mine["name"]
    assert got["metrics"] == expected["metrics"]
