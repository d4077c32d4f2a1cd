"""Acknowledging stored entries and announcing what became of them.

Pipeline position: the last step of a batch, after ``store.write_batch`` returned. One
MULTI on the partition's slot XACKs the entries, sets each entry's commit marker (its
:class:`storage.queue.EntryCounts`, short-lived) and publishes one announcement for the
whole batch; ingest's ``?wait=`` waiters (ingest/waiters.py) resolve from the announcement,
or from the marker when the commit beat their subscription. Dead-lettered entries are
finished the same way by consumer.deadletter.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from storage.base import BatchResult, EntryOutcome
from storage.envelope import Envelope
from storage.queue import (
    COMMITTED_MARKER_TTL_S,
    GROUP,
    EntryCounts,
    StreamLayout,
    announce_token,
)
from storage.redisconn import atomic


def entry_counts(envelopes: Sequence[Envelope], result: BatchResult) -> list[EntryCounts]:
    """Per-entry counts of one successful ``write_batch``, in the order of ``envelopes``.

    Both backends report an outcome for every envelope (``BatchResult.outcomes``).
    """
    outcomes = result.outcomes
    return [_counts(outcomes.get(e.entry_id)) for e in envelopes]


def _counts(outcome: EntryOutcome | None) -> EntryCounts:
    if outcome is None:
        return EntryCounts()
    return EntryCounts(outcome.stored, outcome.revisions, outcome.duplicates)


async def commit(
    redis: Redis,
    layout: StreamLayout,
    partition: int,
    ids: Sequence[str],
    counts: Sequence[EntryCounts],
    *,
    clear: str | None = None,
) -> None:
    """XACK ``ids`` of ``partition``, mark and announce each with its counts, atomically;
    ``clear`` names the in-flight hash (consumer.crashes) whose fields for ``ids`` go too.

    A marker already set stays (``SET NX``): the first commit of an entry carries the
    counts of the write that stored it; a second writer of the same entry (one that
    stalled past the claim idle) only saw duplicates."""
    key = layout.committed_key

    def fill(pipe: Pipeline) -> None:
        pipe.xack(layout.stream(partition), GROUP, *ids)
        if clear is not None:
            pipe.hdel(clear, *ids)
        for entry_id, c in zip(ids, counts, strict=True):
            pipe.set(key(partition, entry_id), c.encode(), ex=COMMITTED_MARKER_TTL_S, nx=True)
        pipe.publish(
            layout.committed_channel,
            ",".join(announce_token(partition, i, c) for i, c in zip(ids, counts, strict=True)),
        )

    # every key carries the partition's hash tag: one slot, one MULTI on a cluster too
    await atomic(redis, layout.stream(partition), fill)
