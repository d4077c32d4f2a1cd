"""Stream layout shared by ingest (producer) and consumer (docs/architecture.md, "Stream contract").

Pipeline position: names every Redis key both tiers touch, routes a bundle to its
partition, guards the recorded partition count and defines the commit announcements that
answer ``?wait=``. Keys of one partition carry a literal ``{p}`` hash tag so a Redis
Cluster keeps each partition (its stream, dead stream and commit markers) on one slot; no
helper here builds a command spanning partitions.
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio import Redis

DEFAULT_PREFIX = "leviathan:events"
T = TypeVar("T")


async def resolve(value: Awaitable[T] | T) -> T:
    """redis-py types many asyncio commands as ``Awaitable[T] | T``; await what is awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


GROUP = "writers"


class PartitionMismatchError(RuntimeError):
    """The partition count in Redis differs from this process's configuration."""


@dataclass(frozen=True, slots=True)
class StreamLayout:
    """Key names for one deployment (prefix and partition count)."""

    prefix: str = DEFAULT_PREFIX
    partitions: int = 8

    def partition_of(self, bundle_id: str) -> int:
        """One attempt's posts (same ``bundle_id``) always land in one partition."""
        return zlib.crc32(bundle_id.encode()) % self.partitions

    def stream(self, partition: int) -> str:
        return f"{self.prefix}:{{{partition}}}"

    def streams(self) -> list[str]:
        return [self.stream(p) for p in range(self.partitions)]

    def dead_stream(self, partition: int) -> str:
        """Dead stream of one partition: its undecodable, unstorable and poison entries.

        Same hash tag as the partition's stream, so moving an entry (XADD here, XACK there)
        is one MULTI on one slot.
        """
        return f"{self.prefix}:dead:{{{partition}}}"

    def dead_streams(self) -> list[str]:
        return [self.dead_stream(p) for p in range(self.partitions)]

    @property
    def legacy_dead(self) -> str:
        """The single dead stream of earlier releases; still listed and replayed by ``dlq``."""
        return f"{self.prefix}:dead"

    def spider_dead(self, partition: int) -> str:
        """Bundles Spider refused (a 4xx), with its answer; same slot as the partition."""
        return f"{self.prefix}:spider-dead:{{{partition}}}"

    def spider_lease(self, partition: int) -> str:
        """Lease naming the one forwarder that sends this partition to Spider (keeps order)."""
        return f"{self.prefix}:spider-lease:{{{partition}}}"

    def writer_lease(self, partition: int) -> str:
        """Lease naming the one consumer process that writes this partition (keeps order)."""
        return f"{self.prefix}:writer-lease:{{{partition}}}"

    @property
    def writers(self) -> str:
        """Sorted set of live consumer processes (score: last heartbeat, epoch seconds);
        each takes about ``partitions / len(live)`` writer leases."""
        return f"{self.prefix}:writers"

    def inflight(self, partition: int) -> str:
        """Hash ``entry_id → attempts`` of the re-delivered entries being written one at a
        time: set before an entry is written, deleted when it is acked, so what is left
        counts the writers an entry took down with it. Same slot as the partition."""
        return f"{self.prefix}:inflight:{{{partition}}}"

    @property
    def meta(self) -> str:
        """Hash holding the recorded partition count."""
        return f"{self.prefix}:meta"

    @property
    def committed_channel(self) -> str:
        """Pub/sub channel on which consumers announce committed entries (``?wait=``).

        Each message is a comma-separated list of ``"{partition}:{entry_id}={counts}"``
        tokens (:func:`announce_token`; entry ids alone are not unique across partition
        streams).
        """
        return f"{self.prefix}:committed"

    def committed_key(self, partition: int, entry_id: str) -> str:
        """Short-lived marker (``SET … EX``) for an entry committed before a waiter listened.

        Its value is the entry's :meth:`EntryCounts.encode`.
        """
        return f"{self.prefix}:done:{{{partition}}}:{entry_id}"


@dataclass(frozen=True, slots=True)
class EntryCounts:
    """What became of the events of one stream entry once the consumer finished with it.

    ``stored`` new events, ``revisions`` events stored as a new revision of a known id,
    ``duplicates`` identical re-deliveries dropped, ``dead_lettered`` events moved to the
    partition's dead stream. Every entry the consumer finishes gets these in its commit
    marker and announcement, dead-lettered ones included, so no waiter is left hanging.
    """

    stored: int = 0
    revisions: int = 0
    duplicates: int = 0
    dead_lettered: int = 0

    def __add__(self, other: EntryCounts) -> EntryCounts:
        return EntryCounts(
            self.stored + other.stored,
            self.revisions + other.revisions,
            self.duplicates + other.duplicates,
            self.dead_lettered + other.dead_lettered,
        )

    def encode(self) -> str:
        return f"{self.stored}.{self.revisions}.{self.duplicates}.{self.dead_lettered}"

    @classmethod
    def parse(cls, text: str | bytes) -> EntryCounts | None:
        """Inverse of :meth:`encode`; ``None`` for anything else (an older consumer's ``1``)."""
        if isinstance(text, bytes):
            text = text.decode("ascii", errors="replace")
        parts = text.split(".")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]))


def committed_token(partition: int, entry_id: str) -> str:
    """The key part of an announcement token: which entry of which partition."""
    return f"{partition}:{entry_id}"


def announce_token(partition: int, entry_id: str, counts: EntryCounts) -> str:
    """One token of a :attr:`StreamLayout.committed_channel` message."""
    return f"{partition}:{entry_id}={counts.encode()}"


def parse_announcement(data: str) -> list[tuple[str, EntryCounts]]:
    """``(committed_token, counts)`` of each well-formed token of one message.

    Tokens without counts (announced by a consumer of an earlier release) are skipped: a
    waiter for them answers 202 after its timeout instead of inventing counts.
    """
    out = []
    for token in data.split(","):
        key, sep, counts_text = token.strip().partition("=")
        counts = EntryCounts.parse(counts_text) if sep else None
        if counts is not None:
            out.append((key, counts))
    return out


COMMITTED_MARKER_TTL_S = 120


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``) as a tuple that sorts as Redis orders ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def ensure_partition_count(redis: Redis, layout: StreamLayout) -> None:
    """Record the partition count on first start; refuse to run with a different one.

    Changing P would re-route attempts to other partitions and split their hash chains,
    so a mismatch is fatal and must be resolved by an operator.
    """
    await resolve(redis.hsetnx(layout.meta, "partitions", str(layout.partitions)))
    recorded = await resolve(redis.hget(layout.meta, "partitions"))
    if recorded is None:
        raise PartitionMismatchError(f"could not record the partition count in {layout.meta}")
    value = int(recorded)
    if value != layout.partitions:
        raise PartitionMismatchError(
            f"LEVIATHAN_PARTITIONS={layout.partitions} but Redis records {value} partitions "
            f"for prefix {layout.prefix!r}; start with LEVIATHAN_PARTITIONS={value}"
        )
