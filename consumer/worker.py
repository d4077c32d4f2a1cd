"""The arq worker hosting the consumer process (the only module importing arq).

Pipeline position: ``consumer.__main__`` builds :class:`ConsumerSettings` and calls
:func:`run`. arq owns the process: Redis pool, health key (``--check``: written by arq's own
loop, so like /healthz it reflects the process, not storage), cron jobs for
reclaim/trim/lag/stale consumers and jobs for operator work (replay dead letters, rebuild
the graph). arq reads no streams, so the read loop is a long-running task started in
``on_startup`` and stopped in ``on_shutdown``: on SIGTERM arq cancels its own main task
and calls ``on_shutdown``, where the reader stops, finishes and acks its batch, and the
pools close.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import arq.worker
import orjson
from aiohttp import web
from arq.connections import RedisSettings, log_redis_info
from arq.cron import cron
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from consumer import health, maintenance
from consumer.dlq import replay
from consumer.forwarder import forward as forwarder
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader
from consumer.settings import ConsumerSettings
from storage.base import EventStore, StorageError, describe
from storage.config import create_store
from storage.queue import PartitionMismatchError, ensure_partition_count
from storage.redisconn import refusal_line
from storage.retention import cut_of_days

logger = logging.getLogger(__name__)
SPIDER = "spider"  # ctx key of the Spider forwarder running beside the read loop, if enabled


@dataclass(frozen=True, slots=True)
class Deps:
    """Everything the jobs need; arq's ctx is an untyped dict, so one typed value in it."""

    settings: ConsumerSettings
    redis: Redis
    store: EventStore
    reader: Reader
    metrics: ConsumerMetrics
    read_task: asyncio.Task[None]
    health: web.AppRunner


def deps(ctx: dict[str, Any]) -> Deps:
    value = ctx["deps"]
    assert isinstance(value, Deps)
    return value


async def _guarded_log_redis_info(redis: Any, log_func: Callable[[str], Any]) -> None:
    """arq logs INFO at start; fakeredis' server lacks INFO, which must not stop us."""
    try:
        await log_redis_info(redis, log_func)
    except ResponseError as exc:
        logger.info("redis INFO unavailable (%s); continuing", exc)


# Default 700. A batch of 200 20-event bundles keeps some 30-40k tracked objects alive
# (models, payload dicts, row tuples) until it is acked; at 20,000 a young collection ran
# about once per batch and traversed them all (6% of the NDJSON drain time). Objects die
# by reference count here, not in cycles, so collections can be rare.
GC_GEN0_THRESHOLD = 200_000


def tune_gc() -> None:
    """Process-wide collector tuning, once the worker is set up: start-up objects are
    frozen out of later cyclic scans and young collections run seldom. bench/consumer.py
    measured +17% drain rate on both backends with a 20,000 threshold against the default,
    and +8% more on NDJSON with 200,000."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


def _startup(settings: ConsumerSettings) -> Callable[[dict[str, Any]], Any]:
    async def on_startup(ctx: dict[str, Any]) -> None:
        redis = settings.stream_redis()
        await ensure_partition_count(redis, settings.layout)
        store = create_store(settings, writer=True)  # opened by the read loop, which waits for it
        metrics = ConsumerMetrics()
        reader = Reader(redis=redis, store=store, settings=settings, metrics=metrics)
        runner = await health.start(reader, metrics)
        task = reader.start()
        ctx[SPIDER] = forwarder.start_beside(
            settings,
            settings.redis_url,
            settings.layout,
            settings.consumer_name,
            metrics.registry,
            cluster=settings.redis_cluster,
        )
        ctx["deps"] = Deps(settings, redis, store, reader, metrics, task, runner)
        tune_gc()
        logger.info(
            "consumer %s reading %d partitions (%s backend)",
            settings.consumer_name,
            settings.partitions,
            settings.backend,
        )

    return on_startup


async def on_shutdown(ctx: dict[str, Any]) -> None:
    if "deps" not in ctx:
        return
    d = deps(ctx)
    spider: forwarder.Running | None = ctx.get(SPIDER)
    if spider is not None:
        spider.forwarder.stop()  # drains beside the read loop: at most one POST per partition
    d.reader.stop()
    try:
        # the read loop returns after its in-flight batch is written and acked
        await asyncio.wait_for(d.read_task, d.settings.shutdown_timeout_s)
    except TimeoutError:
        logger.warning("read loop did not finish in time; its batch stays pending for a retry")
    except Exception:
        logger.exception("read loop failed")
    if spider is not None:
        await spider.stop(d.settings.spider_stop_s)
    await d.health.cleanup()
    await d.store.close()
    await d.redis.aclose()


T = TypeVar("T")


async def _routine(what: str, step: Awaitable[T], fallback: T) -> T:
    """Run one maintenance step; Redis being away costs one log line, not a traceback per
    cron run (the read loop reports the outage, and the next run tries again)."""
    try:
        return await step
    except (RedisError, OSError) as exc:
        logger.warning("%s skipped, Redis unavailable: %s", what, type(exc).__name__)
        return fallback


async def reclaim_job(ctx: dict[str, Any]) -> int:
    return await _routine("reclaim", deps(ctx).reader.reclaim_all(), 0)


async def trim_job(ctx: dict[str, Any]) -> int:
    return await _routine("trim", maintenance.trim_all(deps(ctx).reader), 0)


async def lag_job(ctx: dict[str, Any]) -> None:
    d = deps(ctx)
    await _routine("lag metrics", maintenance.record_lag(d.reader, d.metrics), None)


async def stale_consumers_job(ctx: dict[str, Any]) -> list[str]:
    return await _routine(
        "stale consumer removal", maintenance.remove_stale_consumers(deps(ctx).reader), []
    )


async def log_stats_job(ctx: dict[str, Any]) -> None:
    """Log size and oldest retained event per partition, for the metrics."""
    d = deps(ctx)
    try:
        d.metrics.record_log(await d.store.log_stats())
    except StorageError as exc:
        logger.warning("log metrics skipped, storage unavailable: %s", describe(exc))


async def retention_job(ctx: dict[str, Any]) -> int:
    """``LEVIATHAN_RETENTION_DAYS``: remove what arrived before the cut (every replica
    runs it; a batch another one already removed is skipped, see storage retain)."""
    d = deps(ctx)
    if d.settings.retention_days is None:
        return 0
    try:
        done = await d.store.retain(cut_of_days(d.settings.retention_days))
    except StorageError as exc:
        logger.warning("retention skipped, storage unavailable: %s", describe(exc))
        return 0
    removed = sum(r.removed for r in done)
    if removed:
        d.metrics.retention_removed.inc(removed)
        logger.info("retention removed %d events from %d partitions", removed, len(done))
    return removed


async def replay_dead_letters(ctx: dict[str, Any], ids: list[str] | None = None) -> int:
    """Operator job: put dead entries (all, or ``dlq list`` handles) back on their streams."""
    d = deps(ctx)
    return (await replay(d.redis, d.settings.layout, ids)).replayed


async def rebuild_graph(ctx: dict[str, Any]) -> int:
    """Operator job: recompute the projected graph from the event log."""
    return await deps(ctx).store.rebuild_graph()


def _redis_settings(url: str) -> RedisSettings:
    """arq's Redis settings, retrying every command through a Redis outage.

    arq's poll loop does not catch connection errors: a Redis restart would end the process
    with a traceback. redis-py retries each command (and each reconnect) with backoff for
    about a minute instead; the stream loop handles outages on its own (consumer.reader).
    """
    # OSError too: a refused reconnect surfaces as the bare OSError inside redis-py's retry.
    errors = (RedisConnectionError, RedisTimeoutError, OSError)
    retry = Retry(
        ExponentialBackoff(cap=2.0, base=0.1),
        retries=40,
        supported_errors=cast("tuple[type[RedisError], ...]", errors),  # typed too narrowly
    )
    return dataclasses.replace(
        RedisSettings.from_dsn(url), retry=retry, retry_on_error=list(errors)
    )


def worker_settings(settings: ConsumerSettings) -> dict[str, Any]:
    """arq worker keyword arguments (a dict is a valid arq settings "class")."""
    every = set(range(0, 60, settings.maintenance_interval_s))
    return {
        "functions": [replay_dead_letters, rebuild_graph],
        "cron_jobs": [
            cron(reclaim_job, second=every, run_at_startup=True),
            cron(trim_job, second=every),
            cron(lag_job, second=every, run_at_startup=True),
            cron(stale_consumers_job, second=every),
            cron(log_stats_job, second=every, run_at_startup=True),
            cron(retention_job, minute=set(range(0, 60, 5)), second={0}),
        ],
        "redis_settings": _redis_settings(settings.arq_url),
        "queue_name": f"{settings.stream_prefix}:arq",
        "health_check_key": f"{settings.stream_prefix}:arq:health:{settings.consumer_name}",
        "health_check_interval": 5,
        "job_serializer": orjson.dumps,
        "job_deserializer": orjson.loads,
        "on_startup": _startup(settings),
        "on_shutdown": on_shutdown,
        "job_completion_wait": 5,
        "keep_result": 60,
        "max_jobs": 4,
    }


class _QuietRoutine(logging.Filter):
    """Drop arq's per-run INFO lines for the maintenance crons and its health recording.

    They fire every few seconds and would bury the lines an operator needs; failures and
    operator-enqueued jobs (replay, rebuild) are still logged, and DEBUG shows everything.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or logging.getLogger().isEnabledFor(logging.DEBUG):
            return True
        message = record.getMessage()
        return "cron:" not in message and not message.startswith("recording health")


def run(settings: ConsumerSettings) -> int:
    """Run the worker until SIGTERM/SIGINT; 0 after a clean drain."""
    logging.getLogger("arq.worker").addFilter(_QuietRoutine())
    # arq.worker bound the name at import; replace that binding only
    setattr(arq.worker, "log_redis_info", _guarded_log_redis_info)  # noqa: B010
    worker = arq.worker.create_worker(worker_settings(settings))
    try:
        with contextlib.suppress(asyncio.CancelledError):
            worker.run()
    except (PartitionMismatchError, health.HealthServerError) as exc:
        # refused at start-up: one line, no traceback (arq has closed its pool by now)
        print(f"consumer: {exc}", file=sys.stderr)
        return 1
    except ResponseError as exc:  # e.g. MOVED: a cluster node addressed as a single node
        print(f"consumer: Redis refused the start-up: {refusal_line(exc)}", file=sys.stderr)
        return 1
    return 0


def check(settings: ConsumerSettings) -> int:
    """``--check``: 0 when this consumer's arq health key is fresh, 1 otherwise."""
    return arq.worker.check_health(worker_settings(settings))
