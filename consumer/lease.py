"""A lease on one partition: the right of exactly one process to work on it, in order.

Pipeline position: shared by the two readers that must keep a partition's stream order
across processes — the storage writers (consumer.ownership, lease
``{prefix}:writer-lease:{p}``) and the Spider forwarder (consumer.forwarder,
``{prefix}:spider-lease:{p}``). A lease is a redis-py :class:`~redis.asyncio.lock.Lock`
(a single key on the partition's slot, so it works on a Redis Cluster too) taken without
blocking (``SET NX PX``) and renewed to its full TTL while its holder works. Renewal and
release compare the token under ``WATCH`` and act in a MULTI on the key's node instead of
the lock's Lua scripts, so leases also work where scripting does not (the fakeredis queue
of ``leviathan-cp dev``).

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
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import RedisError, WatchError

from storage.redisconn import as_cluster

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

    @property
    def _token(self) -> bytes | None:
        token = self.lock.local.token
        if token is None:
            return None
        return token if isinstance(token, bytes) else str(token).encode()

    @property
    def _key(self) -> str:
        name = self.lock.name
        return name if isinstance(name, str) else bytes(name).decode()

    async def _node(self) -> Redis:
        redis = cast("Redis", self.lock.redis)
        cluster = as_cluster(redis)
        return redis if cluster is None else await cluster.node_for(self._key)

    async def _if_ours(self, extend: bool) -> bool:
        """Extend (or delete) the key if it still holds our token; False if it does not."""
        token = self._token
        if token is None:
            return False
        key = self._key
        async with (await self._node()).pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                if await pipe.get(key) != token:
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
                if extend:
                    pipe.pexpire(key, int(self.ttl * 1000))
                else:
                    pipe.delete(key)
                await pipe.execute()
            except WatchError:  # changed between the check and the EXEC: not ours now
                return False
        return True

    async def take(self) -> bool:
        """True when we hold the lease (still, or now), with a full TTL ahead."""
        sent = time.monotonic()
        held = await self._if_ours(extend=True) or bool(await self.lock.acquire())
        self.renewed_at = sent if held else 0.0
        return held

    async def renew(self, *, force: bool = False) -> bool:
        """Extend the lease to its full TTL; False when it was lost (expired and taken).

        Without ``force`` at most every :data:`RENEW_EVERY_S`; the TTL outlives that plus
        the longest step between two calls."""
        if not force and time.monotonic() - self.renewed_at < RENEW_EVERY_S:
            return True
        sent = time.monotonic()
        if not await self._if_ours(extend=True):
            logger.warning("%s: lost the lease of partition %s", self.what, self.partition)
            self.renewed_at = 0.0
            return False
        self.renewed_at = sent
        return True

    async def release(self) -> None:
        self.renewed_at = 0.0
        with contextlib.suppress(RedisError, OSError):
            await self._if_ours(extend=False)
