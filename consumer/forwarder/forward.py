"""The Spider forwarder: every accepted bundle is POSTed to Spider at least once.

Pipeline position: a second reader of the partition streams, beside the storage writers
and never in their way. It runs as tasks of the consumer process
(``LEVIATHAN_SPIDER_ENABLED=true``) or as ``leviathan-cp forward``; either way with its own
consumer group, Redis connection and HTTP session, so a slow or hanging Spider delays only
the forwarder.

Per partition, one task holds a lease (a Redis lock on ``{prefix}:spider-lease:{p}``) so
that of all the processes running a forwarder exactly one sends a partition, one bundle
at a time, in stream order. A holder takes over its predecessor's pending entries first.
An entry is acked only after Spider answered 2xx; connection errors, timeouts, 5xx and 429
are retried with bounded, jittered backoff (the entry stays pending, later ones wait
behind it); a 4xx about the bundle moves it to the partition's ``spider-dead`` stream with
the answer. Unsent entries past ``LEVIATHAN_SPIDER_MAX_BACKLOG`` per partition are skipped,
oldest first, so a Spider that is down for a week cannot fill Redis. Nothing is skipped
silently: entries given up for the bound, and entries trimmed from the stream before the
forwarder read them (its group was left out of trimming while nobody read it, see
consumer.maintenance), are counted in ``leviathan_spider_skipped_total{reason}`` and
logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import RedisError

from consumer.forwarder.http import Answer, SpiderClient
from consumer.forwarder.metrics import SpiderMetrics
from consumer.forwarder.settings import SpiderSettings
from consumer.forwarder.stream import PartitionStream
from consumer.lease import Lease
from storage.envelope import SUPPORTED_VERSIONS
from storage.queue import StreamLayout
from storage.redisconn import redis_client as stream_client

logger = logging.getLogger(__name__)


class Outcome(enum.Enum):
    DONE = "done"  # acked: sent, or dead-lettered
    SKIPPED = "skipped"  # the backlog bound gave it up while it was being retried
    ABANDONED = "abandoned"  # stopping or lease lost: it stays pending for the next holder


@dataclass
class Forwarder:
    """Forwards every partition of ``layout`` as ``consumer_name`` in the Spider group."""

    redis: Redis
    layout: StreamLayout
    settings: SpiderSettings
    consumer_name: str
    metrics: SpiderMetrics
    heartbeat: float = field(default_factory=time.monotonic)
    failing_since: float | None = None
    """Monotonic time of the first failed POST since Spider last answered (None: it did)."""
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.client = SpiderClient(self.settings)

    def stop(self) -> None:
        """Stop after the POST in flight (acked if Spider accepted it)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def unreachable_for(self) -> float:
        """Seconds Spider has been failing every POST (0 while it answers)."""
        return 0.0 if self.failing_since is None else time.monotonic() - self.failing_since

    async def _pause(self, seconds: float) -> bool:
        """Sleep, cut short by :meth:`stop`; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        self.heartbeat = time.monotonic()
        return self.stopping

    def part(self, partition: int) -> PartitionStream:
        s = self.settings
        return PartitionStream(
            self.redis,
            self.layout,
            partition,
            s.spider_group,
            self.consumer_name,
            dead_keep=s.spider_max_backlog,
        )

    async def run(self) -> None:
        """Every partition concurrently until :meth:`stop`; Redis being down is waited out."""
        await self.client.open()
        try:
            async with asyncio.TaskGroup() as tg:
                for partition in range(self.layout.partitions):
                    tg.create_task(self.run_partition(partition), name=f"spider-{partition}")
        finally:
            await self.client.close()

    async def run_partition(self, partition: int) -> None:
        part = self.part(partition)
        lock = Lock(
            self.redis,
            self.layout.spider_lease(partition),
            timeout=self.settings.spider_lease_s,
            blocking=False,
            thread_local=False,
        )
        lease = Lease(lock, partition)
        created = False
        while not self.stopping:
            self.heartbeat = time.monotonic()
            try:
                if not created:
                    await part.ensure_group(self.settings.spider_start)
                    created = True
                if not await lease.take():
                    # another process forwards this partition; stand by to take over
                    await self._pause(self.settings.spider_lease_s / 3)
                    continue
                try:
                    await self._forward(part, lease)
                finally:
                    # the next holder reports this partition's lag; a stale gauge here would
                    # add to its value in a sum over processes
                    with contextlib.suppress(KeyError):
                        self.metrics.lag.remove(str(partition))
                    if self.stopping:  # hand over at once instead of after the lease expires
                        await lease.release()
            except RedisError as exc:
                logger.warning("spider forwarder: redis failed on partition %s: %s", partition, exc)
                await self._pause(min(self.settings.spider_retry_max_s, 5.0))
            except Exception:  # a bug must not end forwarding for good; entries stay pending
                logger.exception("spider forwarder: partition %s failed; restarting it", partition)
                await self._pause(self.settings.spider_retry_max_s)

    async def _forward(self, part: PartitionStream, lease: Lease) -> None:
        """Send the partition while we hold its lease: pending entries first, then new ones."""
        await part.claim_all()
        await part.forget_idle_consumers(int(self.settings.spider_lease_s * 1000))
        cursor = "0"
        while not self.stopping:
            if not await lease.renew():
                return
            await self._bound_backlog(part)
            entries, gone = await part.read(
                cursor, self.settings.spider_batch, self.settings.spider_block_ms
            )
            self.heartbeat = time.monotonic()
            if gone:
                self._trimmed_pending(part, gone)
            await part.ack(gone)
            if cursor == "0" and not entries and not gone:
                cursor = ">"
                continue
            for entry_id, fields in entries:
                outcome = await self._deliver(part, lease, entry_id, fields)
                if outcome is Outcome.ABANDONED:
                    return
                if outcome is Outcome.SKIPPED:
                    cursor = "0"  # what is left of the batch is in our pending list
                    break

    async def _deliver(
        self, part: PartitionStream, lease: Lease, entry_id: str, fields: dict[bytes, bytes]
    ) -> Outcome:
        """POST one entry until Spider accepts or refuses it."""
        body = fields.get(b"bundle")
        version = fields.get(b"v", b"")
        if body is None or not version.isdigit() or int(version) not in SUPPORTED_VERSIONS:
            await part.dead_letter(entry_id, fields, "undecodable: no bundle of a known version")
            self.metrics.dead_lettered.inc()
            return Outcome.DONE
        delay = self.settings.spider_retry_min_s
        ref = f"{part.partition}:{entry_id}"
        attempt = 0
        while True:
            attempt += 1
            if not await lease.renew():  # a POST may take the whole timeout
                return Outcome.ABANDONED
            started = time.perf_counter()
            answer = await self.client.post(body, ref)
            self.metrics.post_seconds.observe(time.perf_counter() - started)
            self.heartbeat = time.monotonic()
            if answer.kind != "retry":
                return await self._answered(part, entry_id, fields, answer)
            self._failed(answer, ref, attempt, delay)
            if await self._pause(delay * random.uniform(0.5, 1.0)):
                return Outcome.ABANDONED
            delay = min(delay * 2, self.settings.spider_retry_max_s)
            if await self._bound_backlog(part):
                return Outcome.SKIPPED  # the oldest pending entry, this one, was given up

    async def _answered(
        self, part: PartitionStream, entry_id: str, fields: dict[bytes, bytes], answer: Answer
    ) -> Outcome:
        if self.failing_since is not None:
            logger.info(
                "spider forwarder: Spider answers again after %.1fs", self.unreachable_for()
            )
        self.failing_since = None
        self.metrics.up.set(1)
        if answer.kind == "ok":
            await part.ack([entry_id])
            self.metrics.forwarded.inc()
            return Outcome.DONE
        logger.warning(
            "spider forwarder: Spider refused entry %s:%s (%s); moved to %s",
            part.partition,
            entry_id,
            answer.describe(),
            self.layout.spider_dead(part.partition),
        )
        reason = f"spider refused: HTTP {answer.status}"
        await part.dead_letter(entry_id, fields, reason, answer.status, answer.body)
        self.metrics.dead_lettered.inc()
        return Outcome.DONE

    def _trimmed_pending(self, part: PartitionStream, gone: list[str]) -> None:
        self.metrics.skipped.labels("trimmed").inc(len(gone))
        logger.warning(
            "spider forwarder: partition %s: %d pending bundles (%s .. %s) were trimmed from "
            "the stream before they were sent; they are skipped",
            part.partition,
            len(gone),
            gone[0],
            gone[-1],
        )

    def _failed(self, answer: Answer, ref: str, attempt: int, delay: float) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.metrics.up.set(0)
        self.metrics.failed.labels(answer.reason).inc()
        if attempt & (attempt - 1) == 0:  # attempts 1, 2, 4, 8, …: a week down is not a flood
            logger.warning(
                "spider forwarder: POST of entry %s failed (%s; attempt %d), retry in about %.1fs",
                ref,
                answer.describe(),
                attempt,
                delay,
            )

    async def _bound_backlog(self, part: PartitionStream) -> int:
        """Count what was trimmed before we read it, then skip the oldest unsent entries
        beyond the configured backlog; returns how many were skipped for the bound."""
        gap, last, backlog = await part.trimmed_unread()
        if gap:
            self.metrics.skipped.labels("trimmed").inc(gap)
            logger.warning(
                "spider forwarder: partition %s: %d unsent bundles after %s were trimmed from "
                "the stream before they were read (the forwarder was away and its group "
                "left out of trimming); they are skipped",
                part.partition,
                gap,
                last,
            )
        if backlog is None:
            return 0
        limit = self.settings.spider_max_backlog
        skipped = 0
        if backlog > limit:
            skipped, first, last = await part.skip_oldest(backlog - limit)
            if skipped:
                self.metrics.skipped.labels("backlog").inc(skipped)
                logger.warning(
                    "spider forwarder: partition %s held %d unsent bundles, over "
                    "LEVIATHAN_SPIDER_MAX_BACKLOG=%d: skipped the %d oldest (%s .. %s) unsent",
                    part.partition,
                    backlog,
                    limit,
                    skipped,
                    first,
                    last,
                )
        self.metrics.lag.labels(str(part.partition)).set(backlog - skipped)
        return skipped


@dataclass
class Running:
    """A forwarder running as a task of another process (the consumer)."""

    forwarder: Forwarder
    task: asyncio.Task[None]

    async def stop(self, timeout_s: float) -> None:
        """Stop and wait; past ``timeout_s`` the POST in flight is cancelled (its entry
        stays pending and is sent again later: a duplicate, never a loss)."""
        self.forwarder.stop()
        try:
            await asyncio.wait_for(self.task, timeout_s)
        except TimeoutError:
            logger.warning("spider forwarder did not stop in time; its entry stays pending")
        except Exception:
            logger.exception("spider forwarder failed")
        await self.forwarder.redis.aclose()


def redis_client(url: str, settings: SpiderSettings, *, cluster: bool = False) -> Redis:
    """The forwarder's own Redis client (one node, or the cluster with ``cluster``); a Redis
    that stops answering fails its commands after a few seconds (beyond the blocking read)
    instead of hanging a partition loop."""
    return stream_client(
        url,
        cluster=cluster,
        socket_timeout=settings.spider_block_ms / 1000 + 5,
        socket_connect_timeout=5,
    )


def start_beside(
    settings: SpiderSettings,
    redis_url: str,
    layout: StreamLayout,
    consumer_name: str,
    registry: CollectorRegistry,
    *,
    cluster: bool = False,
) -> Running | None:
    """Start forwarding inside the calling process when ``LEVIATHAN_SPIDER_ENABLED``;
    metrics go to ``registry`` (the host process's /metrics)."""
    if not settings.spider_enabled:
        return None
    forwarder = Forwarder(
        redis_client(redis_url, settings, cluster=cluster),
        layout,
        settings,
        consumer_name,
        SpiderMetrics(registry),
    )
    task = asyncio.create_task(forwarder.run(), name="spider-forwarder")
    logger.info(
        "forwarding every bundle to %s (group %s)", settings.spider_url, settings.spider_group
    )
    return Running(forwarder, task)
