"""The ingest aiohttp application: ``create_app(settings)`` (README "The contract").

Pipeline position: the HTTP front door. Builds the per-app Redis client, metrics registry,
token set, group-commit publisher, lag gauge and commit listener; the cleanup_ctx checks
the partition count, starts the background tasks and, on shutdown, lets queued XADDs
finish before closing Redis. Serve it with :data:`HANDLER_ARGS` so request bodies arrive
still compressed (``ingest.body`` inflates them under a size cap).
"""

from __future__ import annotations

import ctypes
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from ingest import console
from ingest.auth import TokenSet
from ingest.backpressure import LagGauge
from ingest.budget import Budget
from ingest.cluster_publisher import ClusterPublisher
from ingest.deps import DEPS_KEY, QueryDeps
from ingest.handlers import RAW_SLACK, Runtime, ingest_routes
from ingest.metrics import IngestMetrics
from ingest.middlewares import auth_middleware, error_middleware
from ingest.openapi import openapi_routes
from ingest.publisher import Publisher
from ingest.query import query_routes
from ingest.settings import IngestSettings
from ingest.store_ctx import store_ctx
from ingest.waiters import Waiters
from storage.queue import ensure_partition_count
from storage.redisconn import as_cluster

log = logging.getLogger(__name__)

# aiohttp would otherwise inflate gzip bodies itself, unbounded, and a corrupt stream
# surfaced as a 500. Pass as keyword arguments to AppRunner or web.run_app
# (both forward them to the request handler) or TestServer.start_server.
HANDLER_ARGS: dict[str, Any] = {"auto_decompress": False}
GC_GEN0_THRESHOLD = 20_000  # default 700: a 20-event bundle allocates thousands of objects


def tune_gc() -> None:
    """Process-wide collector tuning for a serving process; call once, after start-up.

    What exists by then (modules, app, settings) lives as long as the process: freezing it
    keeps it out of every later cyclic scan, and a larger young generation means fewer
    collections per request. Measured with bench/ingest.py: real-app p99 43-55 ms → 16 ms.
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


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


def _add_routes(app: web.Application, rt: Runtime) -> None:
    """Every route table of the ingest process; the query API and console add theirs here."""
    app.add_routes(ingest_routes(rt))
    app.cleanup_ctx.append(store_ctx(rt.settings))  # the query API reads storage
    app.add_routes(query_routes())
    app.add_routes(openapi_routes(rt.settings.partitions))
    app.add_routes(console.routes)


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


def create_app(settings: IngestSettings, redis: Redis | None = None) -> web.Application:
    """The ingest app; ``redis`` lets tests inject a client (e.g. fakeredis)."""
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
        metrics.inflight_bytes.set,
    )
    waiters = Waiters(client, settings.layout)
    rt = Runtime(settings, client, metrics, publisher, lag, waiters, budget)
    app = web.Application(
        client_max_size=settings.max_body_bytes + RAW_SLACK,
        middlewares=[
            error_middleware(metrics, settings.retry_after_seconds),
            auth_middleware(TokenSet.from_settings(settings)),
        ],
    )
    app[RUNTIME_KEY] = rt
    app[SETTINGS_KEY] = settings

    app[DEPS_KEY] = QueryDeps(
        layout=settings.layout,
        redis=lambda: rt.redis,
        publish=rt.publish,
        autonomy_config=settings.autonomy_config_path,
    )
    app.cleanup_ctx.append(_lifecycle)
    _add_routes(app, rt)
    return app
