"""Hash chain of the event log (DESIGN §4): canonical JSON and sha256 links.

Pipeline position: storage backends call :func:`link` for each new event of a partition,
in insertion order, inside the write transaction; ``verify`` commands call
:func:`first_broken_link` over a partition's stored events. One chain per partition, so
partitions are written in parallel without a global lock.

The canonical form (as the original control plane): the keys ``event_id, event_type,
timestamp, actor_id, payload, prev_hash``, sorted, compact separators, UTF-8, non-ASCII
kept as is. Timestamps are the normalised strings of :mod:`storage.schema`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS_HASH = "0" * 64


def canonical_json(
    *,
    event_id: str,
    event_type: str,
    timestamp: str,
    actor_id: str | None,
    payload: Mapping[str, Any],
    prev_hash: str,
) -> bytes:
    return orjson.dumps(
        {
            "actor_id": actor_id,
            "event_id": event_id,
            "event_type": event_type,
            "payload": payload,
            "prev_hash": prev_hash,
            "timestamp": timestamp,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def link(
    *,
    event_id: str,
    event_type: str,
    timestamp: str,
    actor_id: str | None,
    payload: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """The ``hash`` of an event whose predecessor in its partition has ``prev_hash``."""
    return hashlib.sha256(
        canonical_json(
            event_id=event_id,
            event_type=event_type,
            timestamp=timestamp,
            actor_id=actor_id,
            payload=payload,
            prev_hash=prev_hash,
        )
    ).hexdigest()


def content_digest(
    *, event_type: str, timestamp: str, actor_id: str | None, payload: Mapping[str, Any]
) -> str:
    """Digest of what a client sent for an ``event_id`` (duplicate vs conflict test)."""
    body = orjson.dumps(
        {
            "actor_id": actor_id,
            "event_type": event_type,
            "payload": payload,
            "timestamp": timestamp,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Result of walking one partition's chain."""

    partition: int
    checked: int
    ok: bool
    last_hash: str
    broken_at_seq: int | None = None
    broken_event_id: str | None = None
    reason: str | None = None


def first_broken_link(partition: int, events: Iterable[Any]) -> ChainReport:
    """Walk events (objects with seq, event_id, ..., prev_hash, hash) in seq order.

    Names the first event whose ``prev_hash`` does not match its predecessor's hash, whose
    own ``hash`` does not match its content, or whose ``seq`` skips or repeats.
    """
    prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for ev in events:
        problem = None
        if ev.seq != expected_seq:
            problem = f"sequence {ev.seq} where {expected_seq} was expected"
        elif ev.prev_hash != prev:
            problem = "prev_hash does not match the previous event's hash"
        else:
            actual = link(
                event_id=ev.event_id,
                event_type=ev.event_type,
                timestamp=ev.timestamp,
                actor_id=ev.actor_id,
                payload=ev.payload,
                prev_hash=ev.prev_hash,
            )
            if actual != ev.hash:
                problem = "hash does not match the event's content"
        if problem is not None:
            return ChainReport(partition, checked, False, prev, ev.seq, ev.event_id, problem)
        prev = ev.hash
        expected_seq += 1
        checked += 1
    return ChainReport(partition, checked, True, prev)
