"""Which partitions this consumer process writes: one writer per partition, rebalanced.

Pipeline position: consulted by every partition task of consumer.reader before it reads
or writes. A partition's stream is written by exactly one process at a time, the holder
of its writer lease ``{prefix}:writer-lease:{p}`` (consumer.lease, the same lease the
Spider forwarder uses), so a partition's entries — the chunks of one big bundle among
them — are stored in stream order, and no two processes write one partition at once.

Rebalancing: every process heartbeats into the sorted set ``{prefix}:writers``; with L
live members each holds at most ``ceil(P / L)`` leases. A process under its share takes
free leases, one over it gives one up after its current batch. Consumers beyond P stand
by (holding none) and take over when a holder dies or leaves.

Fencing (docs/design-notes.md, "One writer per partition"): leases are renewed by
:meth:`Ownership.run` every ``lease_s / 5`` seconds beside the partition tasks, so a
slow write never lets its lease lapse. A partition task starts a storage write only while
its lease is certainly valid for more than half the TTL (:meth:`Ownership.may_write`;
:meth:`Ownership.confirm` renews first when a busy event loop delayed the renewal task);
a process that cannot renew (Redis unreachable from it, a frozen event loop) stops
starting writes well before another process can take the lease after the full TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import RedisError

from consumer.lease import Lease
from storage.queue import StreamLayout, resolve

logger = logging.getLogger(__name__)

WHAT = "consumer"


@dataclass
class Ownership:
    """The writer leases of one consumer process and its membership heartbeat."""

    redis: Redis
    layout: StreamLayout
    name: str
    lease_s: float
    live: int = 1
    """Live consumer processes seen at the last heartbeat (this one included)."""
    leases: dict[int, Lease] = field(default_factory=dict)
    held: set[int] = field(default_factory=set)

    def lease(self, partition: int) -> Lease:
        lease = self.leases.get(partition)
        if lease is None:
            lock = Lock(
                self.redis,
                self.layout.writer_lease(partition),
                timeout=self.lease_s,
                blocking=False,
                thread_local=False,
            )
            lease = self.leases[partition] = Lease(lock, partition, what=WHAT)
        return lease

    @property
    def share(self) -> int:
        """Most leases this process should hold: ``ceil(P / live)``."""
        return math.ceil(self.layout.partitions / max(1, self.live))

    def holds(self, partition: int) -> bool:
        return partition in self.held

    def fenced(self, partition: int) -> bool:
        """Whether writes of the partition go through its lease (they do once its task
        took it; a batch handed to the reader directly, as unit tests do, does not)."""
        return partition in self.leases

    def may_write(self, partition: int) -> bool:
        """Whether a storage write may start now: the lease is ours for > TTL / 2."""
        return partition in self.held and self.lease(partition).valid_for() > self.lease_s / 2

    async def confirm(self, partition: int) -> bool:
        """May a write start now? Renews first when the last renewal is too old (a busy
        event loop delayed the renewal task): only a lease really lost says no."""
        if self.may_write(partition):
            return True
        if partition in self.held and await self.lease(partition).renew(force=True):
            return self.may_write(partition)
        self.lost(partition)
        return False

    async def heartbeat(self) -> None:
        """Record this process as live; forget members silent for a TTL; count them."""
        now = time.time()
        key = self.layout.writers
        await resolve(self.redis.zadd(key, {self.name: now}))
        await resolve(self.redis.zremrangebyscore(key, "-inf", now - self.lease_s))
        self.live = max(1, int(await resolve(self.redis.zcard(key))))

    async def acquire(self, partition: int) -> bool:
        """Take the partition's lease if this process is under its share and it is free."""
        if partition in self.held:
            return True
        if len(self.held) >= self.share:
            return False
        if await self.lease(partition).take():
            self.held.add(partition)
            logger.info("consumer %s writes partition %s", self.name, partition)
            return True
        return False

    def over_share(self) -> bool:
        return len(self.held) > self.share

    async def release(self, partition: int) -> None:
        """Give the partition up (nothing of it may be in flight here any more)."""
        if partition in self.held:
            self.held.discard(partition)
            await self.lease(partition).release()
            logger.info("consumer %s hands partition %s over", self.name, partition)

    def lost(self, partition: int) -> None:
        """The lease expired under us: stop treating the partition as ours."""
        self.held.discard(partition)

    async def renew_all(self) -> None:
        for partition in sorted(self.held):
            if not await self.lease(partition).renew(force=True):
                self.lost(partition)

    async def run(self, stopped: asyncio.Event) -> None:
        """Heartbeat and renew every held lease every ``lease_s / 5`` until ``stopped``."""
        tick = self.lease_s / 5
        while not stopped.is_set():
            try:
                await self.heartbeat()
                await self.renew_all()
            except (RedisError, OSError) as exc:
                # Redis away: nobody can take a lease meanwhile; may_write() runs out on its own
                logger.warning("lease renewal failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), tick)

    async def leave(self) -> None:
        """On shutdown: release every lease and the membership, so others take over now."""
        for partition in sorted(self.held):
            await self.release(partition)
        with contextlib.suppress(RedisError, OSError):
            await resolve(self.redis.zrem(self.layout.writers, self.name))
