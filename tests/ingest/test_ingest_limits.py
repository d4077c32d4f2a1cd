"""Limits a crafted body runs into, in-process: nesting, NUL at depth, one event's size,
the parse-cost estimate against one request's share."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fakeredis import FakeAsyncRedis

from ingest.body import CHUNK_EVENTS
from ingest.cost import SMALL_BODY, SMALL_FACTOR, estimate
from storage.schema import nul_locations
from tests.factories import body, event
from tests.ingest.ingest_support import (
    AUTH,
    ClientFactory,
    client_for,
    make_settings,
    raw,
    stream_entries,
)

URL = "/v1/events/ingest"


def _one_event(payload: dict[str, Any], n: int = 1) -> dict[str, Any]:
    events = [event("x.y", payload if i == 0 else {}, event_id=f"e-{i}") for i in range(n)]
    return body("repo-a", "limits-1", events)


def _deep_list(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_the_nul_walk_is_iterative_and_in_document_order() -> None:
    deep = {"p": _deep_list(5000, "a\x00")}
    (found,) = list(nul_locations(deep))
    assert found == ["p", *([0] * 5000)]
    value = {"a": ["x", {"k\x00": "y\x00", "z": [1, "\x00"]}], "b\x00": 1}
    assert list(nul_locations(value)) == [
        ["a", 1, "k\x00"],  # the key
        ["a", 1, "k\x00"],  # its value
        ["a", 1, "z", 1],
        ["b\x00"],
    ]
    assert list(nul_locations("\x00")) == [[]]
    assert list(nul_locations(7)) == []


async def test_a_nul_990_levels_deep_is_a_422(aiohttp_client: ClientFactory) -> None:
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(), redis)
    # orjson writes at most 254 levels: the deep part is spliced into the text
    deep = b'{"a":' * 990 + b'"a\\u0000b"' + b"}" * 990
    text = orjson.dumps(_one_event({"x": 0})).replace(b'"x":0', b'"x":' + deep)
    resp = await client.post(URL, data=text, headers=AUTH)
    assert resp.status == 422
    answer = await resp.json()
    assert "NUL" in answer["detail"]
    assert answer["errors"][0]["loc"] == ["events", 0, "payload", "x", *(["a"] * 990)]
    assert await stream_entries(redis) == []


@pytest.mark.parametrize(
    ("depth", "status", "phrase"),
    [
        (1000, 422, "nested too deeply to be stored"),  # orjson parses it, cannot write it
        (100_000, 400, "depth limit exceeded"),  # orjson's own limit: 1,024 levels
    ],
)
async def test_deep_nesting_anywhere_is_a_4xx(
    aiohttp_client: ClientFactory, depth: int, status: int, phrase: str
) -> None:
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(), redis)
    text = orjson.dumps(_one_event({"x": 0})).replace(
        b'"x":0', b'"x":' + b"[" * depth + b"]" * depth
    )
    resp = await client.post(URL, data=text, headers=AUTH)
    assert resp.status == status
    assert phrase in (await resp.json())["detail"]
    assert await stream_entries(redis) == []
    # in the artifacts: refused as well; in an unknown top-level key: ignored once parsed
    for where, expected in ((b'"artifacts":', {status}), (b'"extra":', {status, 202})):
        text = orjson.dumps(_one_event({})).replace(
            b'{"target"', b"{" + where + b"[" * depth + b"]" * depth + b',"target"'
        )
        resp = await client.post(URL, data=text, headers=AUTH)
        assert resp.status in expected, (where, resp.status, await resp.text())


@pytest.mark.parametrize("events", [3, CHUNK_EVENTS + 5])  # the one-model path, the chunked
async def test_one_event_over_the_limit_is_a_413_naming_it(
    aiohttp_client: ClientFactory, events: int
) -> None:
    redis = FakeAsyncRedis()
    settings = make_settings(max_event_bytes=64 * 1024, entry_max_bytes=16 * 1024)
    client = await client_for(aiohttp_client, settings, redis)
    obj = _one_event({}, events)
    obj["events"][2]["payload"] = {"blob": "y" * (64 * 1024)}
    resp = await client.post(URL, data=raw(obj), headers=AUTH)
    assert resp.status == 413
    answer = await resp.json()
    assert answer["detail"].startswith("Event 2 is ")
    assert "at most 64 KiB (LEVIATHAN_MAX_EVENT_BYTES)" in answer["detail"]
    assert answer["errors"][0]["loc"] == ["events", 2]
    assert await stream_entries(redis) == []
    # just under the limit: stored, as several entries of which one holds the big event
    obj["events"][2]["payload"] = {"blob": "y" * (60 * 1024)}
    resp = await client.post(URL, data=raw(obj), headers=AUTH)
    assert resp.status == 202


@pytest.mark.parametrize("events", [3, CHUNK_EVENTS + 5, 2 * CHUNK_EVENTS + 5])
async def test_role_fields_are_checked_on_both_paths_alike(
    aiohttp_client: ClientFactory, events: int
) -> None:
    """A big bundle is validated a chunk at a time; its role fields get the same bounds,
    named with their place in the whole bundle, and nothing of it is queued."""
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(), redis)
    obj = _one_event({}, events)
    last = events - 1
    obj["events"][1]["payload"] = {"attempt_id": "x" * 256}
    obj["events"][last]["payload"] = {"pr_number": 2**63, "status": "s" * 256}
    resp = await client.post(URL, data=raw(obj), headers=AUTH)
    assert resp.status == 422, await resp.text()
    answer = await resp.json()
    assert answer["errors"] == [
        {"loc": ["events", 1, "payload", "attempt_id"], "msg": "must be at most 255 characters"},
        {
            "loc": ["events", last, "payload", "pr_number"],
            "msg": "integer must be within signed 64-bit",
        },
        {"loc": ["events", last, "payload", "status"], "msg": "must be at most 255 characters"},
    ]
    assert await stream_entries(redis) == []
    # with another error in the bundle the role fields are not named, on either path
    obj["events"][0]["timestamp"] = "not a time"
    resp = await client.post(URL, data=raw(obj), headers=AUTH)
    assert resp.status == 422
    assert [e["loc"] for e in (await resp.json())["errors"]] == [["events", 0, "timestamp"]]
    assert await stream_entries(redis) == []


async def test_a_body_whose_parse_exceeds_the_share_is_a_413_naming_it(
    aiohttp_client: ClientFactory,
) -> None:
    redis = FakeAsyncRedis()
    mib = 1024 * 1024
    settings = make_settings(max_inflight_bytes=64 * mib, max_request_bytes=8 * mib)
    client = await client_for(aiohttp_client, settings, redis)
    text = orjson.dumps(_one_event({"x": [{}] * 200_000}))  # ~600 KB, ~25 MiB estimated
    resp = await client.post(URL, data=text, headers=AUTH)
    assert resp.status == 413
    detail = (await resp.json())["detail"]
    assert "objects and arrays" in detail
    assert "at most 8 MiB (LEVIATHAN_INGEST_MAX_REQUEST_BYTES)" in detail
    assert await stream_entries(redis) == []
    # the same body fits a larger share
    big = make_settings(max_inflight_bytes=64 * mib, max_request_bytes=64 * mib)
    client = await client_for(aiohttp_client, big, redis)
    assert (await client.post(URL, data=text, headers=AUTH)).status == 202


def test_the_estimate_counts_what_becomes_python_objects() -> None:
    small = b"[" + b",".join([b"{}"] * 1000) + b"]"
    assert len(small) <= SMALL_BODY
    assert estimate(small).total == len(small) * SMALL_FACTOR  # not even looked at
    objects = b'{"x":[' + b",".join([b"{}"] * 100_000) + b"]}"
    cost = estimate(objects)
    assert (cost.containers, cost.values, cost.strings) == (100_002, 99_999, 1)
    strings = orjson.dumps({"s": "y" * 1_000_000})
    assert estimate(strings).total < 4 * len(strings)  # a long string costs a few times its bytes
    assert estimate(objects).total > 50 * len(objects)  # an empty object ~90 bytes
