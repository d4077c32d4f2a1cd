"""Durable in-flight marks: which re-delivered entry was being written when a writer died.

Pipeline position: used by consumer.reader for entries delivered before (its pending list
after a restart, a lease takeover or a failed read), which it writes one at a time (one
per process, whatever the partition). Before such an entry is written, :func:`mark`
increments its field in the partition's hash ``{prefix}:inflight:{p}``; the MULTI that
acks the entry deletes the field (consumer.commit, or :func:`clear` after a dead-letter
move). A field that is still there when the entry comes round again is a writer that
died while writing that entry alone — nothing else was marked — so the count is exactly
the deaths this entry caused, and the healthy entries of its original batch (or of
another partition) never gain any.

The hash carries the partition's hash tag: on a Redis Cluster it lives on the slot of the
stream it describes, so the ack and the clear are one MULTI there too.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from storage.queue import StreamLayout, resolve


async def mark(redis: Redis, layout: StreamLayout, partition: int, entry_id: str) -> int:
    """Record that ``entry_id`` is about to be written; returns how many earlier attempts
    were marked and never cleared (writers that died with it)."""
    attempts = await resolve(redis.hincrby(layout.inflight(partition), entry_id, 1))
    return int(attempts) - 1


async def unmark(redis: Redis, layout: StreamLayout, partition: int, entry_id: str) -> None:
    """Take back a mark whose write was abandoned (lease lost), not died in."""
    key = layout.inflight(partition)
    left = await resolve(redis.hincrby(key, entry_id, -1))
    if int(left) <= 0:
        await resolve(redis.hdel(key, entry_id))


async def clear(redis: Redis, layout: StreamLayout, partition: int, ids: Sequence[str]) -> None:
    """Forget the marks of finished entries (after a dead-letter move)."""
    if ids:
        await resolve(redis.hdel(layout.inflight(partition), *ids))


async def deaths(redis: Redis, layout: StreamLayout, partition: int) -> dict[str, int]:
    """Every marked entry of a partition with its uncleared attempts (for tests, tools)."""
    raw = await resolve(redis.hgetall(layout.inflight(partition)))
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
