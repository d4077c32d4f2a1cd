"""The stream reading loop: XREADGROUP → write_batch → XACK → announce.

Pipeline position: the heart of the consumer. One task per partition reads only that
partition's stream (never one command over several partitions: a cluster rejects
cross-slot commands), writes the decoded bundles with one ``store.write_batch`` and acks
only after it returned (at-least-once; storage dedups re-deliveries). Failure semantics
(docs/design-notes.md, "Failure handling"):

- a transient storage error (:class:`StorageUnavailable`) or a Redis failure keeps the
  batch pending and retries what is left of it with bounded, jittered backoff for as long
  as the outage lasts; an outage never dead-letters anything;
- any other storage error isolates the entries responsible (consumer.isolate): the rest
  is stored and acked, an entry that fails on its own is dead-lettered as ``unstorable``;
- an entry that cannot be decoded is dead-lettered at once.

Entries the process holds are kept alive (consumer.keepalive) so nobody claims them while
we work on them; entries of consumers that stopped come back through :meth:`reclaim`
(XAUTOCLAIM), which hands them to the partition's task, the only writer of its partition.
An entry whose Redis delivery count passed ``max_deliveries`` — it went to that many
processes that died with it — is dead-lettered instead.
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

from consumer import deadletter, isolate, keepalive
from consumer.commit import commit, entry_counts
from consumer.metrics import ConsumerMetrics
from consumer.progress import Entry, PartitionState
from consumer.settings import ConsumerSettings
from storage.base import BatchResult, EventStore
from storage.envelope import Envelope, EnvelopeError, decode
from storage.queue import GROUP, EntryCounts, StreamLayout, id_key, resolve

logger = logging.getLogger(__name__)

# Claimed batches a partition may have waiting before the reclaim job stops claiming for it
MAX_HANDOFF = 4
# What keeps a batch pending and retried instead of isolating entries: storage that cannot
# serve now, and Redis (the acks and dead-letter moves go there).
RETRIED: tuple[type[BaseException], ...] = (*isolate.TRANSIENT, RedisError, OSError)


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


def _entry_bytes(fields: dict[bytes, bytes]) -> int:
    return sum(len(k) + len(v) for k, v in fields.items())


async def read_bounded(
    redis: Redis, settings: ConsumerSettings, stream: str, last_id: str
) -> list[Entry]:
    """One batch of ``stream``: at most ``batch`` entries and its share of ``batch_bytes``.

    Every partition of the process holds a batch at once, so each may read
    ``batch_bytes / partitions`` bytes (at least one entry). XREADGROUP has no byte limit:
    a batch is read in rounds, each asking for no more entries than the remaining share
    holds at the largest entry size ingest writes. Only the first round blocks.
    """
    allowance = max(settings.batch_bytes // settings.partitions, settings.entry_max_bytes)
    entries: list[Entry] = []
    size = 0
    cursor = last_id
    block = settings.block_ms if last_id == ">" else None
    while True:
        room = (allowance - size) // settings.entry_max_bytes
        count = min(settings.batch - len(entries), max(room, 1))
        reply = await resolve(
            redis.xreadgroup(
                GROUP, settings.consumer_name, {stream: cursor}, count=count, block=block
            )
        )
        raw = reply[0][1] if reply else []
        got = _entries(raw)
        entries.extend(got)
        size += sum(_entry_bytes(f) for _, f in got)
        full = len(entries) >= settings.batch or allowance - size < settings.entry_max_bytes
        if len(raw) < count or full:
            return entries
        block = None
        if cursor != ">":  # re-reading our pending list: continue after the last id seen
            last = raw[-1][0]
            cursor = last.decode() if isinstance(last, bytes) else last


@dataclass
class _Ledger:
    """What of one batch is decided but not yet in Redis, and what is finished (acked)."""

    finished: set[str] = field(default_factory=set)
    stored: list[tuple[str, EntryCounts]] = field(default_factory=list)
    letters: list[deadletter.DeadLetter] = field(default_factory=list)
    totals: EntryCounts = field(default_factory=EntryCounts)


@dataclass
class Reader:
    """Reads every partition of one layout as consumer ``settings.consumer_name``."""

    redis: Redis
    store: EventStore
    settings: ConsumerSettings
    metrics: ConsumerMetrics
    storage_ok: bool = True
    storage_problem: str = ""
    """The last transient failure while ``storage_ok`` is False (for /readyz)."""
    states: list[PartitionState] = field(init=False)
    main_task: asyncio.Task[None] | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.states = [PartitionState(p) for p in range(self.settings.partitions)]

    @property
    def layout(self) -> StreamLayout:
        return self.settings.layout

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` as the process's read loop task."""
        self.main_task = asyncio.create_task(self.run(), name="consumer-read-loop")
        return self.main_task

    def stop(self) -> None:
        """Stop reading; the batch in flight is still written and acked."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- one batch -------------------------------------------------------------------
    async def handle_batch(self, partition: int, entries: Sequence[Entry]) -> EntryCounts:
        """Store, dead-letter or ack every entry of one batch read from ``partition``.

        Returns once each entry is finished (acked), retrying transient failures for as
        long as they last; on cancellation (shutdown) what is unfinished stays pending.
        Returns the batch's counts.
        """
        state = self.states[partition]
        ids = [i for i, _ in entries]
        state.take(ids)
        try:
            return await self._finish(partition, entries)
        finally:
            state.drop(ids)

    async def _finish(self, partition: int, entries: Sequence[Entry]) -> EntryCounts:
        started = time.perf_counter()
        ledger = _Ledger()
        envelopes = self._decode(partition, entries, ledger)

        async def stored(batch: Sequence[Envelope], result: BatchResult) -> None:
            counts = entry_counts(batch, result)
            ledger.stored.extend(zip([e.entry_id for e in batch], counts, strict=True))
            ledger.totals += sum(counts, EntryCounts())  # written includes revisions
            self._record_stored(result)
            await self._flush(partition, ledger)

        async def unstorable(refused: isolate.Refused) -> None:
            letters = deadletter.for_refused(
                partition, dict(entries)[refused.envelope.entry_id], refused
            )
            deadletter.log_refused(partition, refused, letters)
            if refused.stored is not None:
                self._record_stored(refused.stored)
            ledger.letters.extend(letters)
            await self._flush(partition, ledger)

        delay = self.settings.retry_min_s
        while True:
            try:
                await self._flush(partition, ledger)
                rest = envelopes
                if ledger.finished:
                    rest = [e for e in envelopes if e.entry_id not in ledger.finished]
                await isolate.store_isolating(self.store, partition, rest, stored, unstorable)
                break
            except RETRIED as exc:
                self._failed(partition, len(entries) - len(ledger.finished), exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.settings.retry_max_s)
        if not self.storage_ok:
            logger.info("partition %s: storage and Redis answer again", partition)
            self.storage_ok, self.storage_problem = True, ""
            self.metrics.storage_available.set(1)
        self._record_batch(envelopes, started)
        return ledger.totals

    def _decode(self, partition: int, entries: Sequence[Entry], ledger: _Ledger) -> list[Envelope]:
        envelopes: list[Envelope] = []
        for entry_id, fields in entries:
            try:
                envelopes.append(decode(entry_id, fields))
            except EnvelopeError as exc:
                # dead at once: retrying cannot make a malformed entry decodable
                logger.warning("undecodable entry %s in partition %s: %s", entry_id, partition, exc)
                ledger.letters.append(
                    deadletter.for_entry(partition, entry_id, fields, f"undecodable: {exc}")
                )
        return envelopes

    async def _flush(self, partition: int, ledger: _Ledger) -> None:
        """Move decided dead letters and ack stored entries (each one MULTI), once each."""
        state = self.states[partition]
        if ledger.letters:
            letters = ledger.letters
            await deadletter.move(self.redis, self.layout, partition, letters)
            ledger.letters = []
            done = [x.entry_id for x in letters]
            ledger.finished.update(done)
            state.finished(done)
            for letter in letters:
                self.metrics.dead_lettered.labels(letter.kind).inc()
                ledger.totals += letter.counts
        if ledger.stored:
            ids = [i for i, _ in ledger.stored]
            counts = [c for _, c in ledger.stored]
            await commit(self.redis, self.layout, partition, ids, counts)
            ledger.stored = []
            ledger.finished.update(ids)
            state.finished(ids)

    def _failed(self, partition: int, left: int, exc: BaseException, delay: float) -> None:
        kind = "Redis" if isinstance(exc, RedisError | OSError) else "storage"
        problem = f"{kind}: {type(exc).__name__}: {deadletter.one_line(str(exc))}"
        if self.storage_ok:
            logger.warning(
                "partition %s: %d entries wait for %s, retrying with backoff up to %.1fs",
                partition,
                left,
                problem,
                self.settings.retry_max_s,
            )
        else:
            logger.debug("partition %s: retry in %.2fs: %s", partition, delay, problem)
        self.storage_ok, self.storage_problem = False, problem
        self.metrics.storage_available.set(0)
        self.metrics.storage_errors.inc()

    def _record_stored(self, result: BatchResult) -> None:
        m = self.metrics
        m.events_written.inc(result.written)
        m.duplicates.inc(result.duplicates)
        if result.revisions:
            m.revisions.inc(result.revisions)

    def _record_batch(self, envelopes: Sequence[Envelope], started: float) -> None:
        m = self.metrics
        m.batch_size.observe(len(envelopes))
        m.batch_seconds.observe(time.perf_counter() - started)
        now = time.time()
        for env in envelopes:
            m.end_to_end.observe(max(0.0, now - env.received_at))

    # -- reading ---------------------------------------------------------------------
    async def read_once(self, partition: int, last_id: str = ">") -> list[Entry]:
        """One batch of one partition (:func:`read_bounded`); another ``last_id`` than
        ``">"`` pages our own pending list."""
        return await read_bounded(self.redis, self.settings, self.layout.stream(partition), last_id)

    async def run_partition(self, partition: int) -> None:
        """Read one partition until stopped: our own pending entries first, then new ones.

        Claimed entries handed over by :meth:`reclaim` are written between reads.
        """
        state = self.states[partition]
        cursor = "0"  # a restart under the same name resumes what it held before dying
        while not self.stopping:
            try:
                if state.handoff:
                    await self.handle_batch(partition, state.handoff.popleft())
                    continue
                entries = await self.read_once(partition, cursor)
                if cursor != ">":
                    if not entries:
                        cursor, state.resumed = ">", True
                        continue
                    cursor = entries[-1][0]
                    entries = [e for e in entries if e[0] not in state.held]
                    entries = await self.drop_poison(partition, entries)
                if entries:
                    await self.handle_batch(partition, entries)
            except (RedisError, OSError) as exc:
                # a read failed: what it may have delivered is in our pending list; re-read
                logger.warning("redis failed on partition %s: %s", partition, exc)
                cursor, state.resumed = "0", False
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
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)
        return False

    async def _open_store(self) -> None:
        try:
            await self.store.open()
        except Exception as exc:
            self.storage_ok, self.storage_problem = False, f"storage: {type(exc).__name__}"
            self.metrics.storage_available.set(0)
            raise
        self.storage_ok, self.storage_problem = True, ""
        self.metrics.storage_available.set(1)

    async def run(self) -> None:
        """All partitions concurrently, plus the keep-alive; returns once :meth:`stop` was
        called and the batches in flight are finished.

        Storage or Redis being down at start is waited out (readiness says so), not fatal.
        """
        if not await self._until_done("opening storage", self._open_store):
            return
        if not await self._until_done(
            "creating the consumer group", lambda: ensure_group(self.redis, self.layout)
        ):
            return
        # the keep-alive outlives the partition tasks: a batch still being retried after
        # stop() (until the shutdown timeout) must not be claimed meanwhile
        done = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                keepalive.run(
                    self.redis,
                    self.layout,
                    self.settings.consumer_name,
                    self.states,
                    self.settings.keepalive_s,
                    done,
                ),
                name="keepalive",
            )
            try:
                async with asyncio.TaskGroup() as partitions:
                    for state in self.states:
                        state.task = partitions.create_task(
                            self.run_partition(state.partition),
                            name=f"partition-{state.partition}",
                        )
            finally:
                done.set()

    # -- health ----------------------------------------------------------------------
    def dead_tasks(self) -> list[str]:
        """Tasks that ended although we are not stopping (liveness fails then)."""
        if self.stopping:
            return []
        dead = [f"partition {s.partition}" for s in self.states if not s.alive]
        if self.main_task is not None and self.main_task.done():
            dead.append("read loop")
        return dead

    def stalled(self, now: float | None = None) -> dict[int, float]:
        """Partitions holding entries without progress for ``stall_s``: seconds each."""
        now = time.monotonic() if now is None else now
        out = {}
        for state in self.states:
            age = state.stalled_for(now)
            if age >= self.settings.stall_s:
                out[state.partition] = age
        return out

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
                "dead-lettered %d entries of partition %s that went to %d+ consumers",
                len(letters),
                partition,
                limit + 1,
            )
        dead = {i for i, _ in poison}
        return [(i, f) for i, f in entries if i not in dead]

    async def _delivery_counts(self, partition: int, entries: Sequence[Entry]) -> dict[str, int]:
        ids = sorted((i for i, _ in entries), key=id_key)
        rows = await resolve(
            self.redis.xpending_range(
                self.layout.stream(partition),
                GROUP,
                min=ids[0],
                max=ids[-1],
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

    async def adopt(self, partition: int, entries: Sequence[Entry]) -> int:
        """Entries just claimed from another consumer: poison check, then hand them to the
        partition's task. Returns how many were handed over."""
        if not entries:
            return 0
        self.metrics.reclaimed.inc(len(entries))
        state = self.states[partition]
        rest = await self.drop_poison(partition, [e for e in entries if e[0] not in state.held])
        if rest:
            state.hand_over(rest)
        return len(rest)

    async def reclaim(self, partition: int) -> int:
        """XAUTOCLAIM entries idle beyond the claim time (consumers that stopped) and hand
        them to the partition's task; returns the number claimed.

        A partition still re-reading its own pending entries after a start is skipped (the
        two would deliver the same entries twice), and so is one whose task has
        :data:`MAX_HANDOFF` claimed batches waiting (memory stays bounded while it is busy).
        """
        state = self.states[partition]
        if not state.resumed:
            return 0
        stream = self.layout.stream(partition)
        cursor: str | bytes = "0-0"
        total = 0
        while len(state.handoff) < MAX_HANDOFF:
            try:
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
            except ResponseError as exc:  # stream or group deleted by an operator meanwhile
                logger.warning("reclaim of partition %s skipped: %s", partition, exc)
                break
            cursor, claimed = reply[0], _entries(reply[1])
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                # Redis already removed these from the PEL: trimmed or XDELed entries
                logger.warning(
                    "partition %s: %d pending ids no longer exist", partition, len(deleted)
                )
            if claimed:
                await self.adopt(partition, claimed)
                total += len(claimed)
            if cursor in (b"0-0", "0-0"):
                break
        return total

    async def reclaim_all(self) -> int:
        total = 0
        for partition in range(self.layout.partitions):
            total += await self.reclaim(partition)
        return total
