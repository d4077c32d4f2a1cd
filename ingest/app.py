"""The ingest aiohttp application: ``create_app(settings)`` (README "The contract").

Pipeline position: the HTTP front door for writes. Builds the per-app Redis client, metrics
registry, token set, group-commit publisher, lag gauge and commit listener; the cleanup_ctx
checks the partition count, starts the background tasks and, on shutdown, lets queued XADDs
finish before closing Redis. Serve it with :data:`HANDLER_ARGS` so request bodies arrive
still compressed (``ingest.body`` inflates them under a size cap).

The read API is the query tier's; a process that serves both (``leviathan-cp ingest`` by
default) passes ``read_api``, the query tier's mount, from above: this package never
imports the read tier.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from ingest.backlog import handle_backlog_suggest
from ingest.backpressure import LagGauge
from ingest.budget import Budget
from ingest.cluster_publisher import ClusterPublisher
from ingest.deps import WRITE_DEPS_KEY, WriteDeps
from ingest.handlers import RAW_SLACK, Runtime, ingest_routes
from ingest.invalidate import handle_invalidate
from ingest.metrics import IngestMetrics
from ingest.publisher import Publisher
from ingest.settings import IngestSettings
from ingest.waiters import Waiters
from storage.queue import ensure_partition_count
from storage.redisconn import as_cluster
from webcore.auth import TokenSet
from webcore.middlewares import error_middleware
from webcore.store_ctx import store_ctx

log = logging.getLogger(__name__)

# aiohttp would otherwise inflate gzip bodies itself, unbounded, and a corrupt stream
# surfaced as a 500. Pass as keyword arguments to AppRunner or web.run_app
# (both forward them to the request handler) or TestServer.start_server.
HANDLER_ARGS: dict[str, Any] = {"auto_decompress": False}
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024


def tune_malloc() -> None:
    """Large buffers straight from mmap, so the memory of a big body goes back when freed.

    glibc raises its mmap threshold each time an mmapped block is freed (up to 32 MiB), so
    after the first big body, bodies, their joins and encoded entries come from the heap,
    which rarely shrinks: 16 concurrent 9 MiB bundles peaked at 345-378 MiB RSS with the
    same in-flight budget that kept them at 250 MiB with a fixed threshold. Setting the
    threshold fixes it. A no-op without glibc.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


# Mounts the read API on an ingest app: gets the app, its settings and how to reach its
# Redis client (for /v1/stats).
ReadApi = Callable[[web.Application, IngestSettings, Callable[[], Redis]], None]

RUNTIME_KEY = web.AppKey("ingest_runtime", Runtime)
SETTINGS_KEY = web.AppKey("ingest_settings", IngestSettings)


def _redis_client(settings: IngestSettings) -> Redis:
    timeout = settings.redis_timeout_seconds
    return settings.stream_redis(
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
    )


def _publisher(settings: IngestSettings, client: Redis, metrics: IngestMetrics) -> Publisher:
    """The group-commit publisher: one, or on a cluster one per master behind a router."""

    def node(redis: Redis) -> Publisher:
        return Publisher(
            redis,
            max_batch=settings.publish_max_batch,
            timeout=settings.redis_timeout_seconds,
            retry_after=settings.retry_after_seconds,
            on_batch=metrics.pipeline_batch_tally.observe,
            min_replica_acks=settings.redis_min_replica_acks,
            reply_wait=settings.redis_reply_wait_seconds,
        )

    cluster = as_cluster(client)
    if cluster is None:
        return node(client)
    return ClusterPublisher(
        cluster,
        node,
        timeout=settings.redis_timeout_seconds,
        retry_after=settings.retry_after_seconds,
    )


def _add_routes(app: web.Application, rt: Runtime, read_api: ReadApi | None) -> None:
    """The write routes; then the read API's, when this process serves reads too."""
    app.add_routes(ingest_routes(rt))
    # invalidate answers 404 for an unknown attempt: it reads storage whatever else is served
    app.cleanup_ctx.append(store_ctx(rt.settings))
    app.add_routes(
        [
            web.post("/v1/attempts/{attempt_id}/invalidate", handle_invalidate),
            web.post("/v1/backlog/suggest", handle_backlog_suggest),
        ]
    )
    if read_api is not None and rt.settings.serve_reads:
        read_api(app, rt.settings, lambda: rt.redis)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME_KEY]
    await ensure_partition_count(rt.redis, rt.settings.layout)
    rt.publisher.start()
    rt.waiters.start()
    log.info(
        "ingest ready: %d partitions, prefix %s", rt.settings.partitions, rt.settings.stream_prefix
    )
    try:
        yield
    finally:
        rt.draining = True
        await rt.publisher.stop()
        await rt.waiters.stop()
        await rt.redis.aclose()


def create_app(
    settings: IngestSettings, redis: Redis | None = None, *, read_api: ReadApi | None = None
) -> web.Application:
    """The ingest app; ``redis`` lets tests inject a client (e.g. fakeredis); ``read_api``
    mounts the read API too (only while ``settings.serve_reads``)."""
    client = redis if redis is not None else _redis_client(settings)
    metrics = IngestMetrics()
    publisher = _publisher(settings, client, metrics)
    lag = LagGauge(
        client,
        settings.layout,
        settings.lag_cache_seconds,
        metrics.record_queue,
        high_water_bytes=settings.queue_high_water_bytes,
    )
    budget = Budget(
        settings.max_inflight_bytes,
        settings.inflight_wait_seconds,
        settings.retry_after_seconds,
    )
    # read at each scrape: a set() on every acquire and release cost two locked updates
    # per request
    metrics.inflight_bytes.set_function(lambda: budget.used)
    waiters = Waiters(client, settings.layout)
    rt = Runtime(settings, client, metrics, publisher, lag, waiters, budget)
    app = web.Application(
        client_max_size=settings.max_body_bytes + RAW_SLACK,
        middlewares=[
            error_middleware(
                metrics, settings.retry_after_seconds, TokenSet.from_settings(settings)
            ),
        ],
    )
    app[RUNTIME_KEY] = rt
    app[SETTINGS_KEY] = settings

    app[WRITE_DEPS_KEY] = WriteDeps(publish=rt.publish)
    app.cleanup_ctx.append(_lifecycle)
    _add_routes(app, rt, read_api)
    return app
