"""Stream layout shared by ingest (producer) and consumer (README.md, "Architecture").

Pipeline position: names every Redis key both tiers touch, routes a bundle to its
partition, and guards the recorded partition count. Keys of one partition carry a literal
``{p}`` hash tag so a Redis Cluster keeps each partition on one slot; no helper here
builds a command spanning partitions.
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

    @property
    def dead(self) -> str:
        """Dead-letter stream: undecodable, poison and conflicting entries, with a reason."""
        return f"{self.prefix}:dead"

    def spider_dead(self, partition: int) -> str:
        """Bundles Spider refused (a 4xx), with its answer; same slot as the partition."""
        return f"{self.prefix}:spider-dead:{{{partition}}}"

    def spider_lease(self, partition: int) -> str:
        """Lease naming the one forwarder that sends this partition to Spider (keeps order)."""
        return f"{self.prefix}:spider-lease:{{{partition}}}"

    @property
    def meta(self) -> str:
        """Hash holding the recorded partition count."""
        return f"{self.prefix}:meta"

    @property
    def committed_channel(self) -> str:
        """Pub/sub channel on which consumers announce committed entries (``?wait=``).

        Each message is a comma-separated list of ``"{partition}:{entry_id}"`` tokens
        (entry ids alone are not unique across partition streams).
        """
        return f"{self.prefix}:committed"

    def committed_key(self, partition: int, entry_id: str) -> str:
        """Short-lived marker (``SET … EX``) for an entry committed before a waiter listened."""
        return f"{self.prefix}:done:{{{partition}}}:{entry_id}"


def committed_token(partition: int, entry_id: str) -> str:
    """One token of a :attr:`StreamLayout.committed_channel` message."""
    return f"{partition}:{entry_id}"


COMMITTED_MARKER_TTL_S = 120


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
