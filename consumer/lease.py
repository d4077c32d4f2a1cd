"""A lease on one partition: the right of exactly one process to work on it, in order.

Pipeline position: shared by the two readers that must keep a partition's stream order
across processes — the storage writers (consumer.ownership, lease
``{prefix}:writer-lease:{p}``) and the Spider forwarder (consumer.forwarder,
``{prefix}:spider-lease:{p}``). A lease is a redis-py :class:`~redis.asyncio.lock.Lock`
(a single key on the partition's slot, so it works on a Redis Cluster too) taken without
blocking and renewed to its full TTL while its holder works.

Fencing is by time: :meth:`Lease.valid_for` says how long the lease is certainly still
ours, counted from the moment the last successful take or renewal was *sent* (so Redis'
own expiry can only come later). A holder stops starting work once that is under its
margin; another process can take the lease only after the TTL ran out in Redis.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

logger = logging.getLogger(__name__)

RENEW_EVERY_S = 2.0
"""A lease is renewed at most this often (one Redis round trip less per step)."""


@dataclass
class Lease:
    """The right to work on one partition: a redis-py lock, renewed while we work."""

    lock: Lock
    partition: int
    what: str = "spider forwarder"
    """Who holds it, for the log line when it is lost."""
    renewed_at: float = 0.0
    """Monotonic time at which the last successful take/renewal was sent (0: never)."""

    @property
    def ttl(self) -> float:
        return float(self.lock.timeout or 0.0)

    def valid_for(self, now: float | None = None) -> float:
        """Seconds the lease is certainly still ours (≤ 0: it may have expired)."""
        if not self.renewed_at:
            return 0.0
        now = time.monotonic() if now is None else now
        return self.renewed_at + self.ttl - now

    async def take(self) -> bool:
        """True when we hold the lease (still, or now), with a full TTL ahead."""
        sent = time.monotonic()
        held = False
        if await self.lock.owned():
            # owned() says nothing about the TTL left: extend it to a full one
            with contextlib.suppress(LockError):
                held = bool(await self.lock.reacquire())
        if not held:
            held = bool(await self.lock.acquire())
        self.renewed_at = sent if held else 0.0
        return held

    async def renew(self, *, force: bool = False) -> bool:
        """Extend the lease to its full TTL; False when it was lost (expired and taken).

        Without ``force`` at most every :data:`RENEW_EVERY_S`; the TTL outlives that plus
        the longest step between two calls."""
        if not force and time.monotonic() - self.renewed_at < RENEW_EVERY_S:
            return True
        sent = time.monotonic()
        try:
            await self.lock.reacquire()
        except LockError:
            logger.warning("%s: lost the lease of partition %s", self.what, self.partition)
            self.renewed_at = 0.0
            return False
        self.renewed_at = sent
        return True

    async def release(self) -> None:
        self.renewed_at = 0.0
        with contextlib.suppress(LockError, RedisError):
            await self.lock.release()
