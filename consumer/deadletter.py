"""Moving stream entries to their partition's dead stream ``{prefix}:dead:{p}``.

Pipeline position: called by the reader for entries that cannot be decoded, entries that
storage refuses on their own (``unstorable``, isolated by consumer.isolate) and entries
Redis delivered more than ``LEVIATHAN_CONSUMER_MAX_DELIVERIES`` times to consumers that died
with them. The XADD to the dead stream, the XACK of the source entry and the entry's commit
marker run in one MULTI on the partition's slot, so an entry is never both lost and acked,
nor dead-lettered twice by a crash in between; the announcement that follows tells a
``?wait=`` caller how many of its events were dead-lettered.

A dead entry keeps the original envelope fields (``v``, ``bundle``, ``received_at``,
``token``, and a chunk's ``bundle_id``/``chunk``/``chunks``) so ``leviathan-cp dlq replay``
can put it back; the ``dead_*`` fields say why. When storage refused only some events of an
entry (consumer.isolate), each of them is a dead entry of its own whose ``bundle`` holds
just that event (or just the artifacts) and whose ``dead_bundle_id``, ``dead_chunk`` and
``dead_event`` say where it came from; the entry's other events are stored, and its commit
marker counts both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from consumer.isolate import ARTIFACTS, Refused
from storage.envelope import Envelope
from storage.queue import (
    COMMITTED_MARKER_TTL_S,
    GROUP,
    EntryCounts,
    StreamLayout,
    announce_token,
)
from storage.redisconn import atomic

logger = logging.getLogger(__name__)

META_PREFIX = b"dead_"
REASON = b"dead_reason"
PARTITION = b"dead_partition"
ENTRY_ID = b"dead_entry_id"
AT = b"dead_at"
BUNDLE_ID = b"dead_bundle_id"
CHUNK = b"dead_chunk"  # "c/n": chunk c (0-based) of a bundle split over n entries
EVENT = b"dead_event"  # index of the event in its entry's events, or "artifacts"
EVENT_ID = b"dead_event_id"
REASON_MAX = 500  # a reason is one line an operator reads, not a whole error report


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry to move: its source id, the fields to write and how many events it held."""

    entry_id: str
    fields: dict[bytes, bytes]
    reason: str
    events: int
    marks: EntryCounts | None = None
    """What this letter adds to its entry's commit marker, when more than its own dead
    events (the stored part of an entry whose other events are dead)."""

    @property
    def counts(self) -> EntryCounts:
        return self.marks if self.marks is not None else EntryCounts(dead_lettered=self.events)

    @property
    def kind(self) -> str:
        """The reason's first word (``undecodable``, ``unstorable``, ``oversized``,
        ``crashed``): a metric label, so never a count or a message."""
        return self.reason.split(":", 1)[0].split(" ", 1)[0]


def one_line(text: str) -> str:
    """An error message as one bounded line (driver errors can span several)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= REASON_MAX else flat[: REASON_MAX - 1] + "…"


def events_in(fields: Mapping[bytes, bytes]) -> int:
    """Events of an entry that could not be decoded as a whole, as far as they can be counted.

    At least 1, so a ``?wait=`` caller of an entry whose bundle is not even JSON still
    learns that something of it was dead-lettered.
    """
    try:
        events = orjson.loads(fields[b"bundle"]).get("events")
    except (KeyError, AttributeError, orjson.JSONDecodeError):
        return 1
    return max(1, len(events)) if isinstance(events, list) else 1


def for_entry(
    partition: int,
    entry_id: str,
    fields: Mapping[bytes, bytes],
    reason: str,
    events: int | None = None,
) -> DeadLetter:
    """A whole stream entry with its original fields and the reason it is dead."""
    out = {k: v for k, v in fields.items() if not k.startswith(META_PREFIX)}
    reason = one_line(reason)
    out.update(_meta(partition, entry_id, reason))
    count = events_in(fields) if events is None else events
    return DeadLetter(entry_id=entry_id, fields=out, reason=reason, events=count)


def for_refused(
    partition: int, fields: Mapping[bytes, bytes], refused: Refused
) -> list[DeadLetter]:
    """The dead letters of an entry storage refused (:class:`consumer.isolate.Refused`):
    the whole entry, or one letter per refused event (or artifacts) holding just that.

    The first letter also carries what was stored of the entry, so the entry's commit
    marker (the sum of its letters) counts stored and dead-lettered events together.
    """
    env = refused.envelope
    if refused.whole:
        reason = f"unstorable: {type(refused.error).__name__}: {refused.error}"
        letter = for_entry(partition, env.entry_id, fields, reason, len(env.bundle.events))
        letter.fields.update(_origin(env, None))
        return [letter]
    raw = orjson.loads(fields[b"bundle"])
    raw_events = raw.get("events") or []
    stored = refused.stored.outcomes.get(env.entry_id) if refused.stored else None
    letters: list[DeadLetter] = []
    for index, error in refused.events:
        part = {k: v for k, v in raw.items() if k not in ("events", "artifacts")}
        if index == ARTIFACTS:
            # with the good events (duplicates on replay) the artifacts keep their attempt
            dead = {i for i, _ in refused.events}
            part["events"] = [e for i, e in enumerate(raw_events) if i not in dead]
            part["artifacts"] = raw.get("artifacts")
            n = 0
        else:
            part["events"] = [raw_events[index]]
            n = 1
        out = {k: v for k, v in fields.items() if not k.startswith(META_PREFIX)}
        out[b"bundle"] = orjson.dumps(part)
        reason = one_line(f"unstorable: {type(error).__name__}: {error}")
        out.update(_meta(partition, env.entry_id, reason))
        out.update(_origin(env, index))
        marks = EntryCounts(dead_lettered=n)
        if not letters and stored is not None:
            marks += EntryCounts(stored.stored, stored.revisions, stored.duplicates)
        letters.append(DeadLetter(env.entry_id, out, reason, n, marks))
    return letters


def _origin(env: Envelope, event: int | None) -> dict[bytes, bytes]:
    """Where a refused part came from: bundle, chunk, and the event's index and id in its
    entry (:data:`ARTIFACTS`: the entry's artifacts; None: the whole entry)."""
    out = {BUNDLE_ID: env.bundle.bundle_id.encode(), CHUNK: f"{env.chunk}/{env.chunks}".encode()}
    if event == ARTIFACTS:
        out[EVENT] = b"artifacts"
    elif event is not None:
        out[EVENT] = str(event).encode()
        out[EVENT_ID] = env.bundle.events[event].event_id.encode()
    elif len(env.bundle.events) == 1:  # e.g. one replayed: its index was the original's
        out[EVENT_ID] = env.bundle.events[0].event_id.encode()
    return out


def _meta(partition: int, entry_id: str, reason: str) -> dict[bytes, bytes]:
    return {
        REASON: reason.encode(),
        PARTITION: str(partition).encode(),
        ENTRY_ID: entry_id.encode(),
        AT: repr(time.time()).encode(),
    }


async def move(
    redis: Redis, layout: StreamLayout, partition: int, letters: Sequence[DeadLetter]
) -> None:
    """XADD each letter to the partition's dead stream, XACK its source entry and mark it
    finished (commit marker + announcement with ``dead_lettered``), atomically."""
    if not letters:
        return

    def fill(pipe: Pipeline) -> None:
        tokens = []
        marks: dict[str, EntryCounts] = {}  # one marker per entry: the sum of its letters
        for letter in letters:
            pipe.xadd(layout.dead_stream(partition), letter.fields)  # type: ignore[arg-type]
            marks[letter.entry_id] = marks.get(letter.entry_id, EntryCounts()) + letter.counts
        pipe.xack(layout.stream(partition), GROUP, *marks)
        for entry_id, counts in marks.items():
            key = layout.committed_key(partition, entry_id)
            pipe.set(key, counts.encode(), ex=COMMITTED_MARKER_TTL_S)
            tokens.append(announce_token(partition, entry_id, counts))
        pipe.publish(layout.committed_channel, ",".join(tokens))

    # dead stream, source stream and markers share the partition's hash tag: one slot
    await atomic(redis, layout.stream(partition), fill)


def log_refused(partition: int, refused: Refused, letters: Sequence[DeadLetter]) -> None:
    """One warning per refused entry: whole, or which of its events."""
    env = refused.envelope
    if refused.whole:
        logger.warning(
            "partition %s: entry %s dead-lettered, storage refuses it: %s",
            partition,
            env.entry_id,
            one_line(str(refused.error)),
        )
        return
    logger.warning(
        "partition %s: entry %s (bundle %s, chunk %d/%d): %d of its %d events stored, "
        "dead-lettered %s: %s",
        partition,
        env.entry_id,
        env.bundle.bundle_id,
        env.chunk,
        env.chunks,
        refused.stored.written if refused.stored else 0,
        len(env.bundle.events),
        ", ".join(x.fields[EVENT].decode() for x in letters),
        letters[0].reason,
    )
