"""Hash chain of the event log (docs/design-notes.md): canonical JSON and sha256 links.

Pipeline position: storage backends call :func:`link_bytes`/:func:`digest_bytes` for each
new event of a partition, in insertion order, inside the write transaction; ``verify``
commands call :func:`first_broken_link` over a partition's stored events — all of them, or
only those after a :class:`ChainPoint` an earlier walk verified (incremental checks). One chain per
partition, so partitions are written in parallel without a global lock.

The canonical form (as the original control plane): the keys ``event_id, event_type,
timestamp, actor_id, payload, prev_hash``, sorted, compact separators, UTF-8, non-ASCII
kept as is. Timestamps are the normalised strings of :mod:`storage.schema`.

Write-path cost: the payload is the only non-trivial part, so it is serialised once per
event (:func:`payload_json`, sorted keys) and spliced into both the chain body and the
duplicate digest as an ``orjson.Fragment``; the outer keys are written in sorted order,
so the bytes equal ``orjson.dumps(whole, option=OPT_SORT_KEYS)`` exactly (pinned by
tests/storage/test_chain.py, including a literal hash value).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS_HASH = "0" * 64
_SORTED = orjson.OPT_SORT_KEYS
_Fragment = orjson.Fragment
_sha256 = hashlib.sha256
_dumps = orjson.dumps


def payload_json(payload: Mapping[str, Any]) -> bytes:
    """The payload exactly as the chain hashes it: sorted keys (recursively), compact."""
    return _dumps(payload, option=_SORTED)


def canonical_bytes(
    *,
    event_id: str,
    event_type: str,
    timestamp: str,
    actor_id: str | None,
    payload_bytes: bytes,
    prev_hash: str,
) -> bytes:
    """The hashed body, given the payload already serialised by :func:`payload_json`."""
    # keys inserted in sorted order: no sort pass needed, same bytes as OPT_SORT_KEYS
    return _dumps(
        {
            "actor_id": actor_id,
            "event_id": event_id,
            "event_type": event_type,
            "payload": _Fragment(payload_bytes),
            "prev_hash": prev_hash,
            "timestamp": timestamp,
        }
    )


def link_of(
    event_id: str,
    event_type: str,
    timestamp: str,
    actor_id: str | None,
    payload: orjson.Fragment,
    prev_hash: str,
) -> str:
    """Hot-path :func:`link_bytes`: positional, the payload bytes wrapped once per event."""
    return _sha256(
        _dumps(
            {
                "actor_id": actor_id,
                "event_id": event_id,
                "event_type": event_type,
                "payload": payload,
                "prev_hash": prev_hash,
                "timestamp": timestamp,
            }
        )
    ).hexdigest()


def digest_of(
    event_type: str, timestamp: str, actor_id: str | None, payload: orjson.Fragment
) -> str:
    """Hot-path :func:`digest_bytes`: positional, the payload bytes wrapped once per event."""
    return _sha256(
        _dumps(
            {
                "actor_id": actor_id,
                "event_type": event_type,
                "payload": payload,
                "timestamp": timestamp,
            }
        )
    ).hexdigest()


def link_bytes(
    *,
    event_id: str,
    event_type: str,
    timestamp: str,
    actor_id: str | None,
    payload_bytes: bytes,
    prev_hash: str,
) -> str:
    """:func:`link` over a payload already serialised by :func:`payload_json`."""
    return link_of(event_id, event_type, timestamp, actor_id, _Fragment(payload_bytes), prev_hash)


def digest_bytes(
    *, event_type: str, timestamp: str, actor_id: str | None, payload_bytes: bytes
) -> str:
    """:func:`content_digest` over a payload already serialised by :func:`payload_json`."""
    return digest_of(event_type, timestamp, actor_id, _Fragment(payload_bytes))


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
    return link_bytes(
        event_id=event_id,
        event_type=event_type,
        timestamp=timestamp,
        actor_id=actor_id,
        payload_bytes=payload_json(payload),
        prev_hash=prev_hash,
    )


def content_digest(
    *, event_type: str, timestamp: str, actor_id: str | None, payload: Mapping[str, Any]
) -> str:
    """Digest of what a client sent for an ``event_id`` (duplicate vs revision test)."""
    return digest_bytes(
        event_type=event_type,
        timestamp=timestamp,
        actor_id=actor_id,
        payload_bytes=payload_json(payload),
    )


@dataclass(frozen=True, slots=True)
class ChainPoint:
    """The end of a verified prefix: the last verified event's ``seq`` and ``hash``."""

    seq: int
    hash: str


GENESIS = ChainPoint(0, GENESIS_HASH)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Result of walking one partition's chain; ``checked`` counts the prefix it resumed at."""

    partition: int
    checked: int
    ok: bool
    last_hash: str
    broken_at_seq: int | None = None
    broken_event_id: str | None = None
    reason: str | None = None


def first_broken_link(
    partition: int, events: Iterable[Any], start: ChainPoint = GENESIS
) -> ChainReport:
    """Walk events (objects with seq, event_id, ..., prev_hash, hash) in seq order.

    Names the first event whose ``prev_hash`` does not match its predecessor's hash, whose
    own ``hash`` does not match its content, or whose ``seq`` skips or repeats. ``events``
    begin right after ``start`` (the genesis for a full walk).
    """
    prev = start.hash
    expected_seq = start.seq + 1
    checked = start.seq
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


def resume_mismatch(partition: int, start: ChainPoint, found: Any) -> ChainReport | None:
    """A broken report when the stored event at ``start.seq`` is not the one verified.

    ``found`` is that stored event or ``None``. Catches a log rewritten or truncated
    under the remembered prefix without re-reading it (a full walk still finds an edit
    anywhere inside it).
    """
    if start.seq == 0:
        return None
    if found is None:
        problem = f"seq {start.seq}, the end of the verified prefix, is no longer stored"
        return ChainReport(partition, start.seq - 1, False, start.hash, start.seq, None, problem)
    if found.hash != start.hash:
        problem = f"the event at seq {start.seq} no longer has the hash verified earlier"
        return ChainReport(
            partition, start.seq - 1, False, start.hash, start.seq, found.event_id, problem
        )
    return None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where retention cut a partition's chain: the last removed event's ``seq`` and
    ``hash`` (the head of the chain at the cut) and when that event arrived. The first
    retained event must link to ``hash`` at ``seq + 1``, so a walk from here still proves
    that nothing after the cut was altered."""

    seq: int
    hash: str
    received_at: str

    @property
    def point(self) -> ChainPoint:
        return ChainPoint(self.seq, self.hash)


def walk_start(after: ChainPoint | None, checkpoint: Checkpoint | None) -> tuple[ChainPoint, bool]:
    """Where a chain walk begins: after ``after`` (a prefix verified earlier) unless that
    lies at or before the retention checkpoint, whose point then stands in for it.
    The flag says the walk starts at the checkpoint (no stored event to re-check there)."""
    if checkpoint is not None and (after is None or after.seq <= checkpoint.seq):
        return checkpoint.point, True
    return after or GENESIS, False
