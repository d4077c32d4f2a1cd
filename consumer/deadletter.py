"""Moving stream entries to the dead-letter stream ``{prefix}:dead`` (DESIGN §3).

Pipeline position: called by the reader for undecodable entries, entries delivered more
than ``LEVIATHAN_CONSUMER_MAX_DELIVERIES`` times and conflicting events. The XADD to the
dead stream and the XACK of the source entry run in one MULTI, so an entry is never both
lost and acked, nor dead-lettered twice by a crash in between.

A dead entry keeps the original envelope fields (``v``, ``bundle``, ``received_at``,
``token``) so ``leviathan-cp dlq replay`` can put it back; the ``dead_*`` fields say why.
A conflict record carries the rejected event instead of the envelope and is not replayable.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from storage.queue import GROUP, StreamLayout

META_PREFIX = b"dead_"
REASON = b"dead_reason"
PARTITION = b"dead_partition"
ENTRY_ID = b"dead_entry_id"
AT = b"dead_at"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry to move: its source id and the fields to write to the dead stream."""

    entry_id: str
    fields: dict[bytes, bytes]
    reason: str


def for_entry(
    partition: int, entry_id: str, fields: Mapping[bytes, bytes], reason: str
) -> DeadLetter:
    """A whole stream entry (undecodable or poison) with its original fields."""
    out = {k: v for k, v in fields.items() if not k.startswith(META_PREFIX)}
    out.update(_meta(partition, entry_id, reason))
    return DeadLetter(entry_id=entry_id, fields=out, reason=reason.split(":", 1)[0])


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
    """XADD each letter to the dead stream and XACK its source entry, atomically."""
    if not letters:
        return
    async with redis.pipeline(transaction=True) as pipe:
        for letter in letters:
            pipe.xadd(layout.dead, letter.fields)  # type: ignore[arg-type]
        pipe.xack(layout.stream(partition), GROUP, *{x.entry_id for x in letters})
        await pipe.execute()
