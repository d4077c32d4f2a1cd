"""The consumer's own HTTP server: /healthz, /readyz, /metrics (DESIGN §5).

Pipeline position: started by the arq worker's on_startup on LEVIATHAN_CONSUMER_PORT,
separate from the ingest API. /healthz is liveness without I/O (the read loop's heartbeat
is fresh); /readyz checks that Redis and storage answer and the process is not draining.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader

logger = logging.getLogger(__name__)

READER = web.AppKey("reader", Reader)
METRICS = web.AppKey("metrics", ConsumerMetrics)
PROBE_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    reader = request.app[READER]
    age = time.monotonic() - reader.heartbeat
    if age > reader.settings.heartbeat_max_age_s:
        return web.json_response(
            {"status": "stalled", "heartbeat_age_s": round(age, 1)}, status=503
        )
    return web.json_response({"status": "healthy"})


async def readyz(request: web.Request) -> web.Response:
    reader = request.app[READER]
    problems: list[str] = []
    if reader.stopping:
        problems.append("draining")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await reader.redis.ping()
    except Exception as exc:  # any failure means not ready; the reason is reported
        problems.append(f"redis: {type(exc).__name__}")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await reader.store.ping()
    except Exception as exc:
        problems.append(f"storage: {type(exc).__name__}")
    if not reader.storage_ok:
        problems.append("storage: last write failed")
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(reader: Reader, consumer_metrics: ConsumerMetrics) -> web.Application:
    app = web.Application()
    app[READER] = reader
    app[METRICS] = consumer_metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class HealthServerError(RuntimeError):
    """The health/metrics port cannot be served (e.g. already in use)."""


async def start(reader: Reader, consumer_metrics: ConsumerMetrics) -> web.AppRunner:
    """Serve on the configured host/port; the caller cleans the runner up on shutdown."""
    runner = web.AppRunner(create_app(reader, consumer_metrics), access_log=None)
    await runner.setup()
    host, port = reader.settings.health_host, reader.settings.health_port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise HealthServerError(
            f"cannot serve /healthz and /metrics on {host}:{port} (LEVIATHAN_CONSUMER_PORT): "
            f"{exc.strerror or exc}"
        ) from None
    logger.info("consumer health server on %s", runner.addresses)
    return runner
