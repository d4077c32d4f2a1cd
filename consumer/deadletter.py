"""Moving stream entries to their partition's dead stream ``{prefix}:dead:{p}``.

Pipeline position: called by the reader for entries that cannot be decoded, entries that
storage refuses on their own (``unstorable``, isolated by consumer.isolate) and entries
Redis delivered more than ``LEVIATHAN_CONSUMER_MAX_DELIVERIES`` times to consumers that died
with them. The XADD to the dead stream, the XACK of the source entry and the entry's commit
marker run in one MULTI on the partition's slot, so an entry is never both lost and acked,
nor dead-lettered twice by a crash in between; the announcement that follows tells a
``?wait=`` caller how many of its events were dead-lettered.

A dead entry keeps the original envelope fields (``v``, ``bundle``, ``received_at``,
``token``) so ``leviathan-cp dlq replay`` can put it back; the ``dead_*`` fields say why.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from storage.queue import (
    COMMITTED_MARKER_TTL_S,
    GROUP,
    EntryCounts,
    StreamLayout,
    announce_token,
)
from storage.redisconn import atomic

META_PREFIX = b"dead_"
REASON = b"dead_reason"
PARTITION = b"dead_partition"
ENTRY_ID = b"dead_entry_id"
AT = b"dead_at"
REASON_MAX = 500  # a reason is one line an operator reads, not a whole error report


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry to move: its source id, the fields to write and how many events it held."""

    entry_id: str
    fields: dict[bytes, bytes]
    reason: str
    events: int

    @property
    def kind(self) -> str:
        """The reason's first word (``undecodable``, ``unstorable``, ``max_deliveries``)."""
        return self.reason.split(":", 1)[0]


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
        for letter in letters:
            pipe.xadd(layout.dead_stream(partition), letter.fields)  # type: ignore[arg-type]
        pipe.xack(layout.stream(partition), GROUP, *{x.entry_id for x in letters})
        for letter in letters:
            counts = EntryCounts(dead_lettered=letter.events)
            key = layout.committed_key(partition, letter.entry_id)
            pipe.set(key, counts.encode(), ex=COMMITTED_MARKER_TTL_S)
            tokens.append(announce_token(partition, letter.entry_id, counts))
        pipe.publish(layout.committed_channel, ",".join(tokens))

    # dead stream, source stream and markers share the partition's hash tag: one slot
    await atomic(redis, layout.stream(partition), fill)
