"""The stream reading loop: XREADGROUP → write_batch → XACK → announce (DESIGN §3).

Pipeline position: the heart of the consumer. One task per partition reads only that
partition's stream (never one command over several partitions: a cluster rejects
cross-slot commands), writes the decoded bundles with one ``store.write_batch`` and acks
only after it returned (at-least-once; storage dedups re-deliveries). Storage failures
leave the batch pending and retry it with bounded, jittered exponential backoff. Entries
of crashed consumers come back through :meth:`Reader.reclaim` (XAUTOCLAIM); an entry whose
Redis delivery count passed the limit goes to the dead stream instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from consumer import deadletter
from consumer.metrics import ConsumerMetrics
from consumer.settings import ConsumerSettings
from storage.base import EventStore
from storage.envelope import Envelope, EnvelopeError, decode
from storage.queue import COMMITTED_MARKER_TTL_S, GROUP, StreamLayout, committed_token, resolve

logger = logging.getLogger(__name__)

Entry = tuple[str, dict[bytes, bytes]]


def _entries(raw: Sequence[tuple[bytes | str, dict[bytes, bytes] | None]]) -> list[Entry]:
    """Normalise redis-py entries; a ``None`` field map is an id whose entry was deleted."""
    out: list[Entry] = []
    for entry_id, fields in raw:
        if fields is None:
            continue
        out.append((entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields))
    return out


async def ensure_group(redis: Redis, layout: StreamLayout) -> None:
    """Create group ``writers`` at id 0 so entries XADDed before it existed are read too."""
    for stream in layout.streams():
        try:
            await resolve(redis.xgroup_create(stream, GROUP, id="0", mkstream=True))
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


@dataclass
class Reader:
    """Reads every partition of one layout as consumer ``settings.consumer_name``."""

    redis: Redis
    store: EventStore
    settings: ConsumerSettings
    metrics: ConsumerMetrics
    heartbeat: float = field(default_factory=time.monotonic)
    storage_ok: bool = True
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    @property
    def layout(self) -> StreamLayout:
        return self.settings.layout

    def lock(self, partition: int) -> asyncio.Lock:
        """One batch at a time per partition keeps each partition's chain appends ordered."""
        return self._locks.setdefault(partition, asyncio.Lock())

    def stop(self) -> None:
        """Stop reading; the batch in flight is still written and acked."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- one batch -------------------------------------------------------------------
    async def handle_batch(self, partition: int, entries: Sequence[Entry]) -> int:
        """Write and ack one batch read from ``partition``; returns events newly written.

        Raises whatever the store raises: nothing is acked then and the caller retries.
        """
        envelopes: list[Envelope] = []
        broken: list[deadletter.DeadLetter] = []
        for entry_id, fields in entries:
            try:
                envelopes.append(decode(entry_id, fields))
            except EnvelopeError as exc:
                logger.warning("undecodable entry %s in partition %s: %s", entry_id, partition, exc)
                broken.append(
                    deadletter.for_entry(partition, entry_id, fields, f"undecodable: {exc}")
                )
        if broken:
            # dead at once: retrying cannot make a malformed entry decodable
            await deadletter.move(self.redis, self.layout, partition, broken)
            for letter in broken:
                self.metrics.dead_lettered.labels(letter.reason).inc()
        if not envelopes:
            return 0
        started = time.perf_counter()
        result = await self.store.write_batch(partition, envelopes)
        conflicts: list[deadletter.DeadLetter] = []  # a reused event_id is stored as a revision
        await self._ack(partition, envelopes, conflicts)
        self._record(envelopes, result.written, result.duplicates, len(conflicts), started)
        return result.written

    async def _ack(
        self,
        partition: int,
        envelopes: Sequence[Envelope],
        conflicts: Sequence[deadletter.DeadLetter],
    ) -> None:
        stream = self.layout.stream(partition)
        ids = [e.entry_id for e in envelopes]
        async with self.redis.pipeline(transaction=True) as pipe:
            for letter in conflicts:
                pipe.xadd(self.layout.dead, letter.fields)  # type: ignore[arg-type]
            pipe.xack(stream, GROUP, *ids)
            for entry_id in ids:
                pipe.set(
                    self.layout.committed_key(partition, entry_id), b"1", ex=COMMITTED_MARKER_TTL_S
                )
            pipe.publish(
                self.layout.committed_channel,
                ",".join(committed_token(partition, i) for i in ids),
            )
            await pipe.execute()

    def _record(
        self, envelopes: Sequence[Envelope], written: int, dups: int, conflicts: int, started: float
    ) -> None:
        m = self.metrics
        m.batch_size.observe(len(envelopes))
        m.batch_seconds.observe(time.perf_counter() - started)
        m.events_written.inc(written)
        m.duplicates.inc(dups)
        m.conflicts.inc(conflicts)
        if conflicts:
            m.dead_lettered.labels("conflict").inc(conflicts)
        now = time.time()
        for env in envelopes:
            m.end_to_end.observe(max(0.0, now - env.received_at))

    async def write_with_retry(self, partition: int, entries: Sequence[Entry]) -> None:
        """``handle_batch`` until it succeeds; backoff is bounded and jittered, never a spin.

        During shutdown the retries continue only until the shutdown timeout cancels us;
        the entries then stay pending and another consumer (or our restart) takes them.
        """
        delay = self.settings.retry_min_s
        while True:
            try:
                async with self.lock(partition):
                    await self.handle_batch(partition, entries)
                self.storage_ok = True
                return
            except RedisError:
                raise
            except Exception as exc:  # any storage failure: keep the batch pending, retry
                self.storage_ok = False
                self.metrics.storage_errors.inc()
                logger.warning(
                    "write_batch failed for partition %s (%d entries), retry in %.2fs: %s",
                    partition,
                    len(entries),
                    delay,
                    exc,
                )
                self.heartbeat = time.monotonic()
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.settings.retry_max_s)

    # -- reading ---------------------------------------------------------------------
    async def read_once(self, partition: int, last_id: str = ">") -> list[Entry]:
        """One XREADGROUP on one partition; ``last_id="0"`` re-reads our own pending list."""
        block = None if last_id != ">" else self.settings.block_ms
        reply = await resolve(
            self.redis.xreadgroup(
                GROUP,
                self.settings.consumer_name,
                {self.layout.stream(partition): last_id},
                count=self.settings.batch,
                block=block,
            )
        )
        if not reply:
            return []
        return _entries(reply[0][1])

    async def run_partition(self, partition: int) -> None:
        """Read one partition until stopped: first our own pending entries, then new ones."""
        cursor = "0"  # a restart under the same name resumes what it held before dying
        while not self.stopping:
            try:
                entries = await self.read_once(partition, cursor)
                self.heartbeat = time.monotonic()
                if cursor != ">":
                    if not entries:
                        cursor = ">"
                        continue
                    entries = await self.drop_poison(partition, entries)
                if entries:
                    await self.write_with_retry(partition, entries)
            except RedisError as exc:
                # whatever we held stays in our pending list: re-read it once Redis is back
                logger.warning("redis failed on partition %s: %s", partition, exc)
                cursor = "0"
                self.heartbeat = time.monotonic()
                await asyncio.sleep(self.settings.retry_max_s)

    async def _until_done(self, what: str, step: Callable[[], Awaitable[None]]) -> bool:
        """Retry a start-up step with backoff until it succeeds or we are stopped."""
        delay = self.settings.retry_min_s
        while not self.stopping:
            try:
                await step()
                return True
            except Exception as exc:  # the database or Redis may come up after us
                logger.warning("%s failed, retry in %.2fs: %s", what, delay, exc)
                self.heartbeat = time.monotonic()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)
        return False

    async def _open_store(self) -> None:
        try:
            await self.store.open()
        except Exception:
            self.storage_ok = False
            raise
        self.storage_ok = True

    async def run(self) -> None:
        """All partitions concurrently; returns when :meth:`stop` was called.

        Storage or Redis being down at start is waited out (readiness says so), not fatal.
        """
        if not await self._until_done("opening storage", self._open_store):
            return
        if not await self._until_done(
            "creating the consumer group", lambda: ensure_group(self.redis, self.layout)
        ):
            return
        async with asyncio.TaskGroup() as tg:
            for partition in range(self.layout.partitions):
                tg.create_task(self.run_partition(partition))

    # -- re-deliveries ---------------------------------------------------------------
    async def drop_poison(self, partition: int, entries: Sequence[Entry]) -> list[Entry]:
        """Dead-letter entries Redis delivered more than the limit; return the rest."""
        if not entries:
            return []
        counts = await self._delivery_counts(partition, entries)
        limit = self.settings.max_deliveries
        poison = [(i, f) for i, f in entries if counts.get(i, 0) > limit]
        if poison:
            letters = [
                deadletter.for_entry(
                    partition, i, f, f"max_deliveries: delivered {counts[i]} times"
                )
                for i, f in poison
            ]
            await deadletter.move(self.redis, self.layout, partition, letters)
            self.metrics.dead_lettered.labels("max_deliveries").inc(len(letters))
            logger.warning(
                "dead-lettered %d poison entries of partition %s", len(letters), partition
            )
        dead = {i for i, _ in poison}
        return [(i, f) for i, f in entries if i not in dead]

    async def _delivery_counts(self, partition: int, entries: Sequence[Entry]) -> dict[str, int]:
        rows = await resolve(
            self.redis.xpending_range(
                self.layout.stream(partition),
                GROUP,
                min=entries[0][0],
                max=entries[-1][0],
                count=len(entries) * 2 + 10,
                consumername=self.settings.consumer_name,
            )
        )
        return {
            (
                r["message_id"].decode() if isinstance(r["message_id"], bytes) else r["message_id"]
            ): int(r["times_delivered"])
            for r in rows
        }

    async def process_claimed(self, partition: int, entries: Sequence[Entry]) -> None:
        """Entries taken over from another consumer: poison check, then the normal path."""
        self.metrics.reclaimed.inc(len(entries))
        rest = await self.drop_poison(partition, entries)
        for start in range(0, len(rest), self.settings.batch):
            await self.write_with_retry(partition, rest[start : start + self.settings.batch])

    async def reclaim(self, partition: int) -> int:
        """XAUTOCLAIM entries idle beyond the claim time, following the cursor to the end."""
        stream = self.layout.stream(partition)
        cursor: str | bytes = "0-0"
        total = 0
        while True:
            reply = await resolve(
                self.redis.xautoclaim(
                    stream,
                    GROUP,
                    self.settings.consumer_name,
                    min_idle_time=self.settings.claim_idle_ms,
                    start_id=cursor,
                    count=self.settings.batch,
                )
            )
            cursor, claimed = reply[0], _entries(reply[1])
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                # Redis already removed these from the PEL: trimmed or XDELed entries
                logger.warning(
                    "partition %s: %d pending ids no longer exist", partition, len(deleted)
                )
            if claimed:
                await self.process_claimed(partition, claimed)
                total += len(claimed)
            if cursor in (b"0-0", "0-0"):
                return total

    async def reclaim_all(self) -> int:
        total = 0
        for partition in range(self.layout.partitions):
            total += await self.reclaim(partition)
        return total
