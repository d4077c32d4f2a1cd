"""POST /v1/events/ingest over fakeredis: success, every 4xx path, gzip, limits, routing."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fakeredis import FakeAsyncRedis

from storage.envelope import decode
from tests.ingest.ingest_support import (
    AUTH,
    LAYOUT,
    ClientFactory,
    bundle_body,
    client_for,
    gz,
    make_settings,
    raw,
    stream_entries,
)

URL = "/v1/events/ingest"


async def test_accepts_and_queues_envelope(aiohttp_client: ClientFactory) -> None:
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(), redis)
    resp = await client.post(URL, data=raw(bundle_body("bundle-att-9", n=3)), headers=AUTH)
    assert resp.status == 202
    assert await resp.json() == {"status": "accepted", "bundle_id": "bundle-att-9", "ingested": 3}
    entries = await stream_entries(redis)
    assert len(entries) == 1
    partition, (entry_id, fields) = entries[0]
    assert partition == zlib.crc32(b"bundle-att-9") % LAYOUT.partitions
    envelope = decode(entry_id.decode(), fields)
    assert envelope.bundle.bundle_id == "bundle-att-9"
    assert envelope.token_label.startswith("tok-")
    assert "secret" not in envelope.token_label


async def test_partition_routing_follows_crc32(aiohttp_client: ClientFactory) -> None:
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(), redis)
    ids = [f"bundle-att-{i}" for i in range(12)]
    for bundle_id in ids:
        resp = await client.post(URL, data=raw(bundle_body(bundle_id)), headers=AUTH)
        assert resp.status == 202
    placed = {}
    for partition, (entry_id, fields) in await stream_entries(redis):
        placed[decode(entry_id.decode(), fields).bundle.bundle_id] = partition
    assert placed == {b: zlib.crc32(b.encode()) % LAYOUT.partitions for b in ids}


async def test_unknown_keys_ignored_and_naive_timestamp_is_utc(
    aiohttp_client: ClientFactory,
) -> None:
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(), redis)
    payload = bundle_body(n=1, legacy_field={"x": 1}, worker_version="0.9")
    payload["events"][0]["timestamp"] = "2026-11-28T12:00:00"
    resp = await client.post(URL, data=raw(payload), headers=AUTH)
    assert resp.status == 202
    [(_, (entry_id, fields))] = await stream_entries(redis)
    stamp = decode(entry_id.decode(), fields).bundle.events[0].timestamp
    assert stamp == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert b"legacy_field" not in fields[b"bundle"]


async def test_gzip_body_accepted(aiohttp_client: ClientFactory) -> None:
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(), redis)
    headers = {**AUTH, "Content-Encoding": "gzip"}
    resp = await client.post(URL, data=gz(raw(bundle_body(n=5))), headers=headers)
    assert resp.status == 202
    assert (await resp.json())["ingested"] == 5
    assert len(await stream_entries(redis)) == 1


def _too_many_events() -> dict[str, Any]:
    return bundle_body(n=11)


CASES: list[tuple[str, dict[str, str], bytes, int]] = [
    ("no token", {"Content-Type": "application/json"}, raw(bundle_body()), 401),
    ("wrong token", {**AUTH, "Authorization": "Bearer nope"}, raw(bundle_body()), 401),
    ("basic scheme", {**AUTH, "Authorization": "Basic abc"}, raw(bundle_body()), 401),
    ("text/plain", {**AUTH, "Content-Type": "text/plain"}, raw(bundle_body()), 415),
    (
        "latin-1 charset",
        {**AUTH, "Content-Type": "application/json; charset=latin-1"},
        raw(bundle_body()),
        415,
    ),
    ("deflate", {**AUTH, "Content-Encoding": "deflate"}, raw(bundle_body()), 415),
    ("malformed json", AUTH, b'{"target": ', 400),
    ("invalid utf-8", AUTH, b'{"target": "\xff\xfe", "bundle_id": "b", "events": []}', 400),
    ("corrupt gzip", {**AUTH, "Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00garbage", 400),
    ("plain json sent as gzip", {**AUTH, "Content-Encoding": "gzip"}, raw(bundle_body()), 400),
    ("truncated gzip", {**AUTH, "Content-Encoding": "gzip"}, gz(raw(bundle_body()))[:-12], 400),
    ("gzip bomb", {**AUTH, "Content-Encoding": "gzip"}, gz(b" " * (8 * 1024 * 1024)), 413),
    ("raw too large", AUTH, b" " * (1024 * 1024), 413),
    ("too many events", AUTH, raw(_too_many_events()), 413),
    ("missing fields", AUTH, raw({"target": "repo-a"}), 422),
    ("array body", AUTH, b"[]", 422),
]


@pytest.mark.parametrize(
    ("headers", "data", "status"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_rejections_leave_nothing_queued(
    aiohttp_client: ClientFactory, headers: dict[str, str], data: bytes, status: int
) -> None:
    redis = FakeAsyncRedis()
    settings = make_settings(max_body_bytes=512 * 1024, max_events=10)
    client = await client_for(aiohttp_client, settings, redis)
    resp = await client.post(URL, data=data, headers=headers)
    assert resp.status == status
    payload = await resp.json()
    assert isinstance(payload["detail"], str)
    assert payload["detail"]
    if status == 401:
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert await stream_entries(redis) == []


async def test_charset_utf8_allowed(aiohttp_client: ClientFactory) -> None:
    client = await client_for(aiohttp_client, make_settings())
    headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
    resp = await client.post(URL, data=raw(bundle_body()), headers=headers)
    assert resp.status == 202


async def test_422_lists_one_error_per_problem(aiohttp_client: ClientFactory) -> None:
    client = await client_for(aiohttp_client, make_settings())
    payload = bundle_body(n=5)
    payload["events"][3]["timestamp"] = "not a time"
    payload["events"][1]["payload"] = "not an object"
    resp = await client.post(URL, data=orjson.dumps(payload), headers=AUTH)
    assert resp.status == 422
    body = await resp.json()
    locs = [e["loc"] for e in body["errors"]]
    assert ["events", 3, "timestamp"] in locs
    assert ["events", 1, "payload"] in locs
    assert len(body["errors"]) == 2
    assert all(isinstance(e["msg"], str) for e in body["errors"])


async def test_nul_in_a_string_is_422_naming_it(aiohttp_client: ClientFactory) -> None:
    """PostgreSQL cannot store U+0000; every backend rejects it at the door, naming where."""
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(), redis)
    payload = bundle_body(n=2)
    payload["events"][1]["payload"]["note"] = "a\x00b"
    payload["events"][0]["payload"]["k\x00"] = 1
    resp = await client.post(URL, data=orjson.dumps(payload), headers=AUTH)
    assert resp.status == 422
    body = await resp.json()
    assert "NUL" in body["detail"]
    locs = [e["loc"] for e in body["errors"]]
    assert ["events", 1, "payload", "note"] in locs
    assert ["events", 0, "payload", "k\x00"] in locs
    assert await stream_entries(redis) == []
    # A literal backslash-u text is fine: only a real NUL is refused.
    ok = bundle_body("bundle-ok", n=1)
    ok["events"][0]["payload"]["note"] = "\\u0000 is how JSON writes NUL"
    assert (await client.post(URL, data=orjson.dumps(ok), headers=AUTH)).status == 202


@pytest.mark.parametrize("wait", ["0", "-1", "31", "abc", "nan", "inf"])
async def test_bad_wait_is_422_naming_wait(aiohttp_client: ClientFactory, wait: str) -> None:
    redis = FakeAsyncRedis()
    client = await client_for(aiohttp_client, make_settings(), redis)
    resp = await client.post(f"{URL}?wait={wait}", data=raw(bundle_body()), headers=AUTH)
    assert resp.status == 422
    assert "wait" in (await resp.json())["detail"]
    assert await stream_entries(redis) == []
