"""Big bundles (split, gzip), bundle checks and the event builders."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from fakecp import FakeControlPlane, raw_bundle
from leviathan_client import BundleTooLarge, Client, InvalidBundle, events
from leviathan_client.encode import compress, dumps, part_id, split
from leviathan_client.spool import pending_files
from leviathan_client.vocabulary import FIELDS, SPECS


def test_a_bundle_over_the_event_limit_is_split_with_derived_ids(fake: FakeControlPlane) -> None:
    raw = {**raw_bundle("big", events=7), "artifacts": [{"sha256": "ab"}]}
    with Client(fake.url, "tok", max_events=3) as client:
        client.send(raw)
        assert client.flush(20)
    assert fake.bundle_ids() == ["big~1of3", "big~2of3", "big~3of3"]
    posted = [r.body for r in fake.requests]
    assert [e["event_id"] for b in posted for e in b["events"]] == [
        e["event_id"] for e in raw["events"]
    ]
    assert [("artifacts" in b) for b in posted] == [True, False, False]


def test_a_413_posts_the_bundle_again_in_halves_until_it_fits(
    fake: FakeControlPlane, tmp_path: Path
) -> None:
    fake.limit_events = 3
    raw = raw_bundle("big", events=10)
    with Client(fake.url, "tok", spool_dir=tmp_path) as client:
        client.send(raw)
        client.send(raw_bundle("one", events=1))
        assert client.flush(20)
        assert (client.stats.delivered, client.stats.rejected) == (5, 0)
    accepted = [r.body for r in fake.requests if len(r.body["events"]) <= 3]
    assert [b["bundle_id"] for b in accepted] == [
        "big~1of2~1of2",
        "big~1of2~2of2",
        "big~2of2~1of2",
        "big~2of2~2of2",
        "one",
    ]
    assert [e for b in accepted[:4] for e in b["events"]] == raw["events"]
    assert pending_files(tmp_path) == []
    assert list((tmp_path / "rejected").iterdir()) == []


def test_a_413_for_one_event_is_final(fake: FakeControlPlane, tmp_path: Path) -> None:
    fake.limit_events = 0
    with Client(fake.url, "tok", spool_dir=tmp_path) as client:
        client.send(raw_bundle("one", events=1))
        assert client.flush(20)
        assert client.stats.rejected == 1
    assert len(list((tmp_path / "rejected").glob("*.answer.json"))) == 1


def test_a_bundle_over_the_byte_limit_is_split_under_it() -> None:
    raw = raw_bundle("big", events=50)
    limit = len(dumps(raw)) // 4
    parts = split(raw, max_bytes=limit)
    assert len(parts) >= 4
    assert all(len(p) <= limit for p in parts)
    events_back = [e for p in parts for e in json.loads(p)["events"]]
    assert events_back == raw["events"]
    with pytest.raises(BundleTooLarge):
        split(raw, max_bytes=100)


def test_derived_ids_stay_within_255_characters() -> None:
    long_id = "x" * 255
    ids = {part_id(long_id, i, 12) for i in range(12)}
    assert len(ids) == 12
    assert all(len(i) <= 255 for i in ids)


def test_big_bodies_are_gzipped(fake: FakeControlPlane, tmp_path: Path) -> None:
    raw = raw_bundle("big", events=2000)
    with Client(fake.url, "tok", gzip_threshold=1024) as client:
        client.send(raw)
        client.send(raw_bundle("small"))
        assert client.flush(20)
    encodings = [r.headers.get("Content-Encoding") for r in fake.requests]
    assert encodings == ["gzip", None]
    assert fake.requests[0].body == raw
    data, zipped = compress(dumps(raw), True, 1024)
    assert zipped
    assert json.loads(gzip.decompress(data)) == raw


def test_malformed_bundles_are_refused_at_send(fake: FakeControlPlane) -> None:
    with Client(fake.url, "tok") as client:
        with pytest.raises(InvalidBundle):
            client.send({"target": "t", "events": []})
        with pytest.raises(InvalidBundle):
            client.send({"target": "t", "bundle_id": "b", "events": "nope"})
        with pytest.raises(InvalidBundle, match="not int"):
            client.send(5)  # type: ignore[arg-type]
        with pytest.raises(InvalidBundle, match="JSON"):
            client.send({**raw_bundle("b"), "extra": {1, 2}})
        with pytest.raises(InvalidBundle, match="JSON"):
            client.post({**raw_bundle("b"), "extra": float("nan")})
    assert fake.requests == []


def test_builders_fill_the_payload_and_derive_stable_ids() -> None:
    first = events.attempt_started("att-1", task_id="task-1", key="att-1/started")
    again = events.attempt_started("att-1", task_id="task-1", key="att-1/started")
    other = events.attempt_succeeded("att-1", key="att-1/started")
    assert first.event_id == again.event_id != other.event_id
    assert first.payload == {"attempt_id": "att-1", "task_id": "task-1"}
    assert events.attempt_started("att-1").event_id != events.attempt_started("att-1").event_id
    task = events.task_created("t2", depends_on=("t1",), extra={"scope": "x"}, actor_id="me")
    assert task.to_dict()["payload"] == {"scope": "x", "task_id": "t2", "depends_on": ["t1"]}
    assert task.to_dict()["actor_id"] == "me"
    made = events.bundle("repo", [first, task], bundle_id="b1").to_dict()
    assert made["bundle_id"] == "b1"
    assert [e["event_type"] for e in made["events"]] == ["attempt.started", "task.created"]
    assert made["events"][0]["timestamp"].endswith("Z")


def test_every_spec_field_is_documented_and_every_builder_makes_its_type() -> None:
    for spec in SPECS:
        assert set(spec.fields) <= FIELDS.keys(), spec.event_type
        args = {name: f"v-{name}" for name in spec.required}
        built = spec.builder(**args)
        assert built.event_type == spec.event_type
        assert built.payload == args
