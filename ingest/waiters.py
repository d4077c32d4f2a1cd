"""``?wait=`` support: what the consumers did with a bundle's stream entries.

Pipeline position: after the XADD, a handler with ``?wait=`` hands the bundle's entries —
one, or several chunks of one partition for a big bundle — to :meth:`Waiters.wait_all` and
waits until the consumers finished every one of them. ONE pub/sub subscription per process
(started in the app's cleanup_ctx) reads the consumers' announcements on
``layout.committed_channel`` — comma-separated ``announce_token`` tokens carrying each
entry's counts (stored, revisions, duplicates, dead-lettered) — and resolves matching
futures. Because a consumer may finish an entry before the waiter is registered, the
entries' ``committed_key`` markers (which hold the same counts) are read once after
registering, and once more at the deadline in case an announcement was missed while the
subscription was reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from storage.queue import EntryCounts, StreamLayout, committed_token, parse_announcement, resolve
from storage.redisconn import after_failure, subscriber

log = logging.getLogger(__name__)


def answer(bundle_id: str, ingested: int, counts: EntryCounts) -> dict[str, Any]:
    """The 200 body of a waited-for ingest; ``partial`` when any event was dead-lettered."""
    return {
        "status": "partial" if counts.dead_lettered else "ok",
        "bundle_id": bundle_id,
        "ingested": ingested,
        "stored": counts.stored,
        "revisions": counts.revisions,
        "duplicates": counts.duplicates,
        "dead_lettered": counts.dead_lettered,
    }


class Waiters:
    def __init__(self, redis: Redis, layout: StreamLayout) -> None:
        self._redis = redis
        self._layout = layout
        self._futures: dict[str, list[asyncio.Future[EntryCounts]]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="ingest-commit-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        while True:
            try:
                client = await subscriber(self._redis)
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._layout.committed_channel)
                    while True:
                        # A short poll, not listen(): an idle subscription must not trip
                        # the client's socket timeout.
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None:
                            self._resolve(message.get("data"))
            except (RedisError, OSError) as exc:
                log.warning("commit listener lost Redis (%s); resubscribing", exc)
                await after_failure(self._redis)
                await asyncio.sleep(1.0)

    def _resolve(self, data: object) -> None:
        if isinstance(data, bytes):
            data = data.decode("utf-8", errors="replace")
        if not isinstance(data, str):
            return
        for token, counts in parse_announcement(data):
            for future in self._futures.pop(token, []):
                if not future.done():
                    future.set_result(counts)

    async def _markers(self, entries: Sequence[tuple[int, str]]) -> list[EntryCounts | None]:
        """The entries' commit markers (None where absent), one MGET per partition: the
        markers of one partition share its hash tag, so each MGET stays on one slot."""
        found: list[EntryCounts | None] = [None] * len(entries)
        by_partition: dict[int, list[int]] = {}
        for n, (partition, _) in enumerate(entries):
            by_partition.setdefault(partition, []).append(n)
        with contextlib.suppress(RedisError, OSError):
            for partition, positions in by_partition.items():
                keys = [self._layout.committed_key(partition, entries[n][1]) for n in positions]
                values = await resolve(self._redis.mget(keys))
                for n, value in zip(positions, values, strict=True):
                    if value is not None:
                        found[n] = EntryCounts.parse(value)
        return found

    async def _settle_from_markers(
        self, entries: Sequence[tuple[int, str]], futures: Sequence[asyncio.Future[EntryCounts]]
    ) -> bool:
        """Resolve futures whose entry has a marker; True when every future is done."""
        for future, marker in zip(futures, await self._markers(entries), strict=True):
            if marker is not None and not future.done():
                future.set_result(marker)
        return all(f.done() for f in futures)

    async def wait_all(
        self, entries: Sequence[tuple[int, str]], seconds: float
    ) -> EntryCounts | None:
        """The summed counts once every ``(partition, entry_id)`` is finished by a consumer
        (stored or dead-lettered); ``None`` if any is not after ``seconds``."""
        loop = asyncio.get_running_loop()
        tokens = [committed_token(p, i) for p, i in entries]
        futures: list[asyncio.Future[EntryCounts]] = [loop.create_future() for _ in tokens]
        for token, future in zip(tokens, futures, strict=True):
            self._futures.setdefault(token, []).append(future)
        try:
            # registered first, then the markers: a commit that beat the registration left
            # its marker, one after it resolves the future
            if not await self._settle_from_markers(entries, futures):
                await asyncio.wait([f for f in futures if not f.done()], timeout=seconds)
                done = all(f.done() for f in futures)
                if not done and not await self._settle_from_markers(entries, futures):
                    return None
            total = EntryCounts()
            for future in futures:
                total += future.result()
            return total
        finally:
            for token, future in zip(tokens, futures, strict=True):
                waiting = self._futures.get(token)
                if waiting is not None and future in waiting:
                    waiting.remove(future)
                    if not waiting:
                        del self._futures[token]
