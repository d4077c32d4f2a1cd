"""Canonical JSON bytes and tamper detection of the per-partition hash chain."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.chain import (
    GENESIS_HASH,
    canonical_bytes,
    content_digest,
    digest_bytes,
    first_broken_link,
    link,
    link_bytes,
    payload_json,
)


def canonical_json(
    *,
    event_id: str,
    event_type: str,
    timestamp: str,
    actor_id: str | None,
    payload: Mapping[str, Any],
    prev_hash: str,
) -> bytes:
    """The bytes a link hashes, from a payload mapping (the write paths pass payload bytes)."""
    return canonical_bytes(
        event_id=event_id,
        event_type=event_type,
        timestamp=timestamp,
        actor_id=actor_id,
        payload_bytes=payload_json(payload),
        prev_hash=prev_hash,
    )


@dataclass(frozen=True)
class Row:
    seq: int
    event_id: str
    event_type: str
    timestamp: str
    actor_id: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str


def chain(n: int) -> list[Row]:
    rows, prev = [], GENESIS_HASH
    for i in range(1, n + 1):
        fields: dict[str, Any] = {
            "event_id": f"e{i}",
            "event_type": "task.created",
            "timestamp": "2026-11-28T09:00:00Z",
            "actor_id": None,
            "payload": {"task_id": f"t{i}", "title": "é ✓"},
            "prev_hash": prev,
        }
        hash_ = link(**fields)
        rows.append(Row(seq=i, hash=hash_, **fields))
        prev = hash_
    return rows


def test_canonical_json_exact_bytes() -> None:
    data = canonical_json(
        event_id="evt-1",
        event_type="attempt.created",
        timestamp="2026-11-28T09:00:00Z",
        actor_id="worker-1",
        payload={"z": 1, "a": {"y": [1, 2], "b": "ü"}},
        prev_hash=GENESIS_HASH,
    )
    expected = (
        '{"actor_id":"worker-1","event_id":"evt-1","event_type":"attempt.created",'
        '"payload":{"a":{"b":"ü","y":[1,2]},"z":1},"prev_hash":"' + "0" * 64 + '",'
        '"timestamp":"2026-11-28T09:00:00Z"}'
    ).encode()
    assert data == expected
    assert (
        link(
            event_id="evt-1",
            event_type="attempt.created",
            timestamp="2026-11-28T09:00:00Z",
            actor_id="worker-1",
            payload={"z": 1, "a": {"y": [1, 2], "b": "ü"}},
            prev_hash=GENESIS_HASH,
        )
        == hashlib.sha256(expected).hexdigest()
    )


def test_content_digest_ignores_key_order_not_values() -> None:
    a = content_digest(event_type="x", timestamp="t", actor_id=None, payload={"a": 1, "b": 2})
    b = content_digest(event_type="x", timestamp="t", actor_id=None, payload={"b": 2, "a": 1})
    c = content_digest(event_type="x", timestamp="t", actor_id=None, payload={"a": 1, "b": 3})
    assert a == b != c


def test_intact_chain_ok() -> None:
    rows = chain(5)
    report = first_broken_link(3, rows)
    assert (report.ok, report.checked, report.last_hash, report.partition) == (
        True,
        5,
        rows[-1].hash,
        3,
    )


def test_edited_payload_named() -> None:
    rows = chain(5)
    rows[2] = replace(rows[2], payload={"task_id": "forged"})
    report = first_broken_link(0, rows)
    assert (report.ok, report.broken_at_seq, report.broken_event_id) == (False, 3, "e3")
    assert report.reason == "hash does not match the event's content"
    assert report.checked == 2


def test_rehashed_edit_breaks_next_link() -> None:
    rows = chain(4)
    forged = replace(rows[1], payload={"task_id": "forged"})
    forged = replace(
        forged,
        hash=link(
            event_id=forged.event_id,
            event_type=forged.event_type,
            timestamp=forged.timestamp,
            actor_id=forged.actor_id,
            payload=forged.payload,
            prev_hash=forged.prev_hash,
        ),
    )
    rows[1] = forged
    report = first_broken_link(0, rows)
    assert (report.broken_at_seq, report.broken_event_id) == (3, "e3")
    assert report.reason == "prev_hash does not match the previous event's hash"


def test_deleted_event_named_by_sequence() -> None:
    rows = chain(4)
    del rows[1]
    report = first_broken_link(0, rows)
    assert (report.ok, report.broken_at_seq) == (False, 3)
    assert report.reason == "sequence 3 where 2 was expected"


PINNED_PAYLOAD: dict[str, Any] = {"z": 1, "a": {"y": [1, 2.5, None, True], "b": 'ü "q" \\ ✓'}}


def test_known_hash_values_pinned() -> None:
    """Literal values computed before the single-serialisation rewrite: stored chains and
    digests written by earlier versions must keep verifying/deduplicating."""
    assert (
        link(
            event_id="evt-1",
            event_type="attempt.created",
            timestamp="2026-11-28T09:00:00Z",
            actor_id="worker-1",
            payload=PINNED_PAYLOAD,
            prev_hash=GENESIS_HASH,
        )
        == "dfd91de6f75aaaefd772cc8e02c5769efcb5e1c33d2b045bc891b63cb7c0ba8d"
    )
    assert (
        content_digest(
            event_type="attempt.created",
            timestamp="2026-11-28T09:00:00Z",
            actor_id=None,
            payload=PINNED_PAYLOAD,
        )
        == "32d093a2b9c9d0dd22873cad5364dbea64ffa93857164a7e1c1bb0d6094ca982"
    )


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    event_id=st.text(min_size=1),
    event_type=st.text(min_size=1),
    actor_id=st.none() | st.text(),
    payload=st.dictionaries(st.text(), _json, max_size=6),
    prev_hash=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
def test_spliced_bytes_equal_sorted_dumps_of_the_whole(
    event_id: str, event_type: str, actor_id: str | None, payload: dict[str, Any], prev_hash: str
) -> None:
    """The payload is serialised once and spliced in; the result must be byte-identical to
    the original definition (one sorted dumps of the whole object)."""
    ts = "2026-11-28T09:00:00.123456Z"
    whole: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "timestamp": ts,
        "actor_id": actor_id,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    expected = orjson.dumps(whole, option=orjson.OPT_SORT_KEYS)
    pbytes = payload_json(payload)
    assert canonical_json(**whole) == expected
    assert (
        link_bytes(
            event_id=event_id,
            event_type=event_type,
            timestamp=ts,
            actor_id=actor_id,
            payload_bytes=pbytes,
            prev_hash=prev_hash,
        )
        == hashlib.sha256(expected).hexdigest()
    )
    digest_body = orjson.dumps(
        {"event_type": event_type, "timestamp": ts, "actor_id": actor_id, "payload": payload},
        option=orjson.OPT_SORT_KEYS,
    )
    assert (
        digest_bytes(event_type=event_type, timestamp=ts, actor_id=actor_id, payload_bytes=pbytes)
        == hashlib.sha256(digest_body).hexdigest()
    )
