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

A partition is read and written only by the process holding its writer lease
(consumer.ownership), so its entries are stored in stream order. On taking a lease the
holder claims (``XAUTOCLAIM … JUSTID``, no data) whatever other consumers left pending in
the partition, then re-reads its own pending list before new entries.

Crashes (docs/design-notes.md, "Crash accounting"): entries delivered before — our
pending list after a restart, a lease takeover or a dropped read — are written one at a
time, each with a durable in-flight mark in Redis (consumer.crashes) set before the write
and cleared in the MULTI that acks it. A mark found already set means the entry was being
written alone when its writer died; after ``max_deliveries`` such deaths it is
dead-lettered (``crashed its consumer N times``) and every other entry of its batch is
stored.

Memory (consumer.memory): reads are sized by the largest entry seen, a batch over its byte
share keeps its first entries and leaves the rest pending to be re-read one at a time,
and decoding waits for the process-wide memory budget; an entry that cannot be decoded
within the whole budget is dead-lettered (``oversized``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from consumer import crashes, deadletter, isolate, keepalive
from consumer.commit import commit, entry_counts
from consumer.memory import MIB, Budget, estimate
from consumer.metrics import ConsumerMetrics
from consumer.ownership import Ownership
from consumer.progress import Entry, PartitionState
from consumer.settings import ConsumerSettings
from consumer.timeouts import TimeoutsAsData
from storage.base import BatchResult, EventStore, StorageTimeout
from storage.envelope import Envelope, EnvelopeError, decode
from storage.queue import GROUP, EntryCounts, StreamLayout, resolve

logger = logging.getLogger(__name__)

# Ids per XPENDING/XCLAIM … JUSTID round when a lease holder takes over a partition (no entry data)
CLAIM_IDS = 500
# What keeps a batch pending and retried instead of isolating entries: storage that cannot
# serve now, and Redis (the acks and dead-letter moves go there).
RETRIED: tuple[type[BaseException], ...] = (*isolate.TRANSIENT, RedisError, OSError)


class LeaseLost(Exception):
    """The partition's writer lease is no longer certainly ours: stop writing it."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(raw: Sequence[tuple[bytes | str, dict[bytes, bytes] | None]]) -> list[Entry]:
    """Normalise redis-py entries; a ``None`` field map is an id whose entry was deleted."""
    out: list[Entry] = []
    for entry_id, fields in raw:
        if fields is None:
            continue
        out.append((_text(entry_id), fields))
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
    redis: Redis, settings: ConsumerSettings, stream: str, state: PartitionState
) -> list[Entry]:
    """One batch of new entries of ``stream``: at most ``batch`` entries and its share of
    ``batch_bytes``.

    Every partition of the process holds a batch at once, so each may read
    ``batch_bytes / partitions`` bytes (at least one entry). XREADGROUP has no byte limit:
    a batch is read in rounds, each asking for no more entries than the remaining share
    holds at the largest entry size ingest writes, or the largest this partition has seen
    lately if that is bigger. Only the first round blocks. A round that went over the
    share anyway (entries bigger than ever seen) is cut after the entries that fit (at
    least one): the rest stay pending and ``state.reread`` makes the partition re-read
    them one at a time.
    """
    allowance = max(settings.batch_bytes // settings.partitions, settings.entry_max_bytes)
    entries: list[Entry] = []
    size = 0
    block: int | None = settings.block_ms
    while True:
        unit = max(settings.entry_max_bytes, state.largest)
        count = min(settings.batch - len(entries), max((allowance - size) // unit, 1))
        reply = await resolve(
            redis.xreadgroup(GROUP, settings.consumer_name, {stream: ">"}, count=count, block=block)
        )
        raw = reply[0][1] if reply else []
        for entry in _entries(raw):
            n = _entry_bytes(entry[1])
            state.saw(n)
            if entries and size + n > allowance:
                state.reread = True  # this one and the rest of the round stay pending
                return entries
            entries.append(entry)
            size += n
        full = len(entries) >= settings.batch or allowance - size < unit
        if len(raw) < count or full:
            return entries
        block = None


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
    ownership: Ownership = field(init=False)
    budget: Budget = field(init=False)
    main_task: asyncio.Task[None] | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _alone: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One marked write at a time in this process, whatever its partition: a death is
    then charged to the one entry being written alone, never to a bystander of another
    partition that happened to be marked at the same moment."""

    def __post_init__(self) -> None:
        self.states = [PartitionState(p) for p in range(self.settings.partitions)]
        self.ownership = Ownership(
            self.redis, self.layout, self.settings.consumer_name, self.settings.lease_s
        )
        self.budget = Budget(self.settings.memory_bytes)

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

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- one batch -------------------------------------------------------------------
    async def handle_batch(
        self, partition: int, entries: Sequence[Entry], *, alone: bool = False
    ) -> EntryCounts:
        """Store, dead-letter or ack every entry of one batch read from ``partition``.

        Returns once each entry is finished (acked), retrying transient failures for as
        long as they last; on cancellation (shutdown) or :class:`LeaseLost` what is
        unfinished stays pending. ``alone``: one re-delivered entry carrying an in-flight
        mark, which its ack clears. Returns the batch's counts.
        """
        state = self.states[partition]
        ids = [i for i, _ in entries]
        state.take(ids)
        try:
            ledger = _Ledger()
            kept, cost = self._refuse_oversized(partition, entries, ledger)
            async with self.budget.hold(cost):
                return await self._finish(partition, entries, kept, ledger, alone)
        finally:
            state.drop(ids)

    def _refuse_oversized(
        self, partition: int, entries: Sequence[Entry], ledger: _Ledger
    ) -> tuple[list[Entry], int]:
        """Entries whose decoding fits the memory budget, and their estimated cost; the
        others become dead letters."""
        kept: list[Entry] = []
        total = 0
        plain = self.settings.entry_max_bytes
        for entry_id, fields in entries:
            cost = estimate(fields, plain)
            if self.budget.fits_alone(cost):
                kept.append((entry_id, fields))
                total += cost
                continue
            reason = (
                f"oversized: decoding it would take about {cost // MIB} MiB, over "
                f"LEVIATHAN_CONSUMER_MEMORY_BYTES ({self.budget.limit // MIB} MiB)"
            )
            logger.warning("partition %s: entry %s dead-lettered, %s", partition, entry_id, reason)
            # counted, not parsed: parsing is what cannot fit
            events = max(1, fields.get(b"bundle", b"").count(b'"event_id"'))
            ledger.letters.append(deadletter.for_entry(partition, entry_id, fields, reason, events))
        return kept, total

    async def _finish(
        self,
        partition: int,
        entries: Sequence[Entry],
        kept: Sequence[Entry],
        ledger: _Ledger,
        alone: bool,
    ) -> EntryCounts:
        started = time.perf_counter()
        envelopes = self._decode(partition, kept, ledger)
        fields_of = dict(kept)

        async def stored(batch: Sequence[Envelope], result: BatchResult) -> None:
            counts = entry_counts(batch, result)
            ledger.stored.extend(zip([e.entry_id for e in batch], counts, strict=True))
            ledger.totals += sum(counts, EntryCounts())  # written includes revisions
            self._record_stored(result)
            await self._flush(partition, ledger, alone)

        async def unstorable(refused: isolate.Refused) -> None:
            letters = deadletter.for_refused(
                partition, fields_of[refused.envelope.entry_id], refused
            )
            deadletter.log_refused(partition, refused, letters)
            if refused.stored is not None:
                self._record_stored(refused.stored)
            ledger.letters.extend(letters)
            await self._flush(partition, ledger, alone)

        own_it = self.ownership.confirm
        delay = self.settings.retry_min_s
        timeouts = 0
        while True:
            try:
                await self._flush(partition, ledger, alone)
                rest = envelopes
                if ledger.finished:
                    rest = [e for e in envelopes if e.entry_id not in ledger.finished]
                if rest and self.ownership.fenced(partition) and not await own_it(partition):
                    raise LeaseLost(f"partition {partition}")
                store: EventStore = self.store
                if timeouts > self.settings.timeout_retries:
                    store = TimeoutsAsData(self.store)
                await isolate.store_isolating(store, partition, rest, stored, unstorable)
                break
            except RETRIED as exc:
                if isinstance(exc, StorageTimeout):
                    timeouts += 1
                self._failed(partition, len(entries) - len(ledger.finished), exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.settings.retry_max_s)
        self._answering_again(partition)
        self._record_batch(envelopes, started)
        return ledger.totals

    def _answering_again(self, partition: int) -> None:
        if not self.storage_ok:
            logger.info("partition %s: storage and Redis answer again", partition)
            self.storage_ok, self.storage_problem = True, ""
            self.metrics.storage_available.set(1)

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

    async def _flush(self, partition: int, ledger: _Ledger, alone: bool = False) -> None:
        """Move decided dead letters and ack stored entries (each one MULTI), once each.

        ``alone``: the entries carry in-flight marks, cleared with them."""
        state = self.states[partition]
        if ledger.letters:
            letters = ledger.letters
            await deadletter.move(self.redis, self.layout, partition, letters)
            ledger.letters = []
            done = [x.entry_id for x in letters]
            if alone:
                await crashes.clear(self.redis, self.layout, partition, done)
            ledger.finished.update(done)
            state.finished(done)
            for letter in letters:
                self.metrics.dead_lettered.labels(letter.kind).inc()
                ledger.totals += letter.counts
        if ledger.stored:
            ids = [i for i, _ in ledger.stored]
            counts = [c for _, c in ledger.stored]
            inflight = self.layout.inflight(partition) if alone else None
            await commit(self.redis, self.layout, partition, ids, counts, clear=inflight)
            ledger.stored = []
            ledger.finished.update(ids)
            state.finished(ids)

    async def handle_alone(self, partition: int, entry: Entry) -> EntryCounts:
        """Write one re-delivered entry under a durable in-flight mark.

        The mark's count says how often the entry was being written alone when its writer
        died; at ``max_deliveries`` it is dead-lettered instead of written again."""
        async with self._alone:
            return await self._handle_alone(partition, entry)

    async def _handle_alone(self, partition: int, entry: Entry) -> EntryCounts:
        entry_id = entry[0]
        state = self.states[partition]
        died = state.marked.get(entry_id)
        if died is None:  # first attempt by this process: count it
            died = await crashes.mark(self.redis, self.layout, partition, entry_id)
            state.marked[entry_id] = died
        try:
            if died >= self.settings.max_deliveries:
                counts = await self._crashed(partition, entry, died)
            else:
                counts = await self.handle_batch(partition, [entry], alone=True)
        except LeaseLost:
            # not a death: give the attempt back to whoever writes the partition next
            state.marked.pop(entry_id, None)
            with contextlib.suppress(RedisError, OSError):
                await crashes.unmark(self.redis, self.layout, partition, entry_id)
            raise
        # (a Redis failure keeps the mark counted here: the re-read must not count it twice)
        state.marked.pop(entry_id, None)
        return counts

    async def _crashed(self, partition: int, entry: Entry, died: int) -> EntryCounts:
        entry_id, fields = entry
        reason = f"crashed its consumer {died} times"
        logger.warning(
            "partition %s: entry %s dead-lettered: it %s (LEVIATHAN_CONSUMER_MAX_DELIVERIES=%d)",
            partition,
            entry_id,
            reason,
            self.settings.max_deliveries,
        )
        letter = deadletter.for_entry(partition, entry_id, fields, reason)
        ledger = _Ledger(letters=[letter])
        await self._flush(partition, ledger, alone=True)
        return ledger.totals

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
    async def read_once(self, partition: int) -> list[Entry]:
        """One batch of new entries of one partition (:func:`read_bounded`)."""
        stream = self.layout.stream(partition)
        return await read_bounded(self.redis, self.settings, stream, self.states[partition])

    async def read_pending(self, partition: int) -> Entry | None:
        """The next entry of our own pending list after ``state.cursor`` (one at a time:
        re-delivered entries are written alone); None once the list is through."""
        state = self.states[partition]
        stream = self.layout.stream(partition)
        while True:
            reply = await resolve(
                self.redis.xreadgroup(
                    GROUP, self.settings.consumer_name, {stream: state.cursor}, count=1
                )
            )
            raw = reply[0][1] if reply else []
            if not raw:
                return None
            entry_id, fields = raw[0]
            state.cursor = _text(entry_id)
            if fields is None:  # deleted (XDEL, trimmed) while pending: nothing to write
                await resolve(self.redis.xack(stream, GROUP, state.cursor))
                continue
            if state.cursor in state.held:
                continue
            return state.cursor, fields

    async def take_over(self, partition: int, min_idle_ms: int = 0) -> int:
        """Claim (ids only: XCLAIM … JUSTID, no entry data) what other consumers left
        pending in a partition we now hold, to be re-read from our pending list in order;
        returns how many ids were claimed."""
        stream = self.layout.stream(partition)
        me = self.settings.consumer_name
        start = "-"
        total = 0
        while True:
            try:
                rows = await resolve(
                    self.redis.xpending_range(stream, GROUP, min=start, max="+", count=CLAIM_IDS)
                )
            except ResponseError as exc:  # stream or group deleted by an operator meanwhile
                logger.warning("claim on partition %s skipped: %s", partition, exc)
                return total
            ids = [_text(r["message_id"]) for r in rows if _text(r["consumer"]) != me]
            if ids:
                claimed = await resolve(
                    self.redis.xclaim(stream, GROUP, me, min_idle_ms, ids, justid=True)  # type: ignore[arg-type]
                )
                total += len(claimed)
            if len(rows) < CLAIM_IDS:
                break
            start = "(" + _text(rows[-1]["message_id"])
        if total:
            self.metrics.reclaimed.inc(total)
            logger.info("partition %s: took over %d pending entries", partition, total)
        return total

    async def step(self, partition: int) -> None:
        """One step of a partition task: take the lease, or write what comes next."""
        state = self.states[partition]
        own = self.ownership
        if not own.holds(partition):
            if not await own.acquire(partition):
                await self._pause(self.settings.lease_s / 5)  # stand by to take over
                return
            await self.take_over(partition)
            state.reread, state.cursor, state.resumed = True, "0", False
        if not await own.confirm(partition):
            raise LeaseLost(f"partition {partition}")
        if state.reread:
            entry = await self.read_pending(partition)
            if entry is None:
                state.reread, state.cursor, state.resumed = False, "0", True
            else:
                await self.handle_alone(partition, entry)
        else:
            entries = await self.read_once(partition)
            if entries:
                await self.handle_batch(partition, entries)
        if own.over_share() and not state.reread:
            await own.release(partition)

    async def run_partition(self, partition: int) -> None:
        """Work on one partition until stopped, while this process holds its lease:
        pending entries first (one at a time), then new ones in batches."""
        state = self.states[partition]
        while not self.stopping:
            try:
                await self.step(partition)
            except LeaseLost:
                logger.warning(
                    "partition %s: writer lease not renewed in time; stopped writing it",
                    partition,
                )
                self.ownership.lost(partition)
                with contextlib.suppress(RedisError, OSError):
                    await self.ownership.lease(partition).release()
            except (RedisError, OSError) as exc:
                # a read failed: what it may have delivered is in our pending list; re-read
                logger.warning("redis failed on partition %s: %s", partition, exc)
                state.reread, state.cursor, state.resumed = True, "0", False
                await self._pause(self.settings.retry_max_s)

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
        """All partitions concurrently, plus the keep-alive and the lease renewal; returns
        once :meth:`stop` was called and the batches in flight are finished.

        Storage or Redis being down at start is waited out (readiness says so), not fatal.
        """
        if not await self._until_done("opening storage", self._open_store):
            return
        if not await self._until_done(
            "creating the consumer group", lambda: ensure_group(self.redis, self.layout)
        ):
            return
        # the keep-alive and the lease renewal outlive the partition tasks: a batch still
        # being retried after stop() (until the shutdown timeout) must not be claimed
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
            tg.create_task(self.ownership.run(done), name="leases")
            try:
                with contextlib.suppress(RedisError, OSError):
                    await self.ownership.heartbeat()  # count ourselves before taking leases
                async with asyncio.TaskGroup() as partitions:
                    for state in self.states:
                        state.task = partitions.create_task(
                            self.run_partition(state.partition),
                            name=f"partition-{state.partition}",
                        )
            finally:
                done.set()
                with contextlib.suppress(RedisError, OSError):
                    await self.ownership.leave()  # others take over at once, not after a TTL

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
    async def adopt(self, partition: int, entries: Sequence[Entry]) -> int:
        """Entries just claimed from another consumer: the partition's task re-reads them
        from our pending list (one at a time, in order) if we hold its lease; otherwise
        the holder claims them from us. Returns how many were taken."""
        if not entries:
            return 0
        self.metrics.reclaimed.inc(len(entries))
        if self.ownership.holds(partition):
            state = self.states[partition]
            state.reread, state.cursor = True, "0"
        return len(entries)

    async def reclaim(self, partition: int) -> int:
        """For a partition we hold: claim (ids only) entries other consumers left idle past
        the claim time — e.g. a consumer of an earlier release — to be re-read in order;
        returns the number claimed. Partitions of other holders are theirs to claim."""
        state = self.states[partition]
        if not self.ownership.holds(partition) or not state.resumed:
            return 0
        claimed = await self.take_over(partition, self.settings.claim_idle_ms)
        if claimed or await self._forgotten(partition):
            state.reread, state.cursor = True, "0"
        return claimed

    async def _forgotten(self, partition: int) -> bool:
        """Whether our own pending list holds an entry idle past the claim time that no
        task of ours is working on (not held): delivered to us, but its reply never reached
        us without an error to say so (seen once while a Redis Cluster moved the stream's
        slot). Re-reading the pending list writes it; nothing else would before a restart."""
        state = self.states[partition]
        rows = await resolve(
            self.redis.xpending_range(
                self.layout.stream(partition), GROUP, min="-", max="+", count=CLAIM_IDS,
                consumername=self.settings.consumer_name, idle=self.settings.claim_idle_ms,
            )
        )  # fmt: skip
        forgotten = [
            _text(r["message_id"]) for r in rows if _text(r["message_id"]) not in state.held
        ]
        if forgotten:
            logger.warning(
                "partition %s: %d entries of ours pending for over %d ms and not in hand "
                "(first %s); re-reading our pending list",
                partition, len(forgotten), self.settings.claim_idle_ms, forgotten[0],
            )  # fmt: skip
        return bool(forgotten)

    async def reclaim_all(self) -> int:
        total = 0
        for partition in range(self.layout.partitions):
            total += await self.reclaim(partition)
        return total
