"""The consumer's own HTTP server: /healthz, /readyz, /metrics.

Pipeline position: started by the arq worker's on_startup on LEVIATHAN_CONSUMER_PORT,
separate from the ingest API. The split (docs/operations.md, "Health"):

- ``/healthz`` is liveness and reflects the process only: the event loop answers (this
  handler runs) and the read loop and every partition task are alive. A storage outage
  does not fail it, so an orchestrator does not restart-loop consumers that are waiting
  the outage out correctly.
- ``/readyz`` reports what keeps data from flowing: Redis or storage not answering, the
  last batch attempt failing, a partition stalled (entries held with no commit for
  ``LEVIATHAN_CONSUMER_STALL_S``), draining. 503 with the reasons in ``problems``.
- ``/metrics`` has the same in gauges: ``leviathan_consumer_storage_available`` and, per
  partition, ``leviathan_consumer_partition_stalled`` and the age of its last progress.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader

logger = logging.getLogger(__name__)

READER = web.AppKey("reader", Reader)
METRICS = web.AppKey("metrics", ConsumerMetrics)
PROBE_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    dead = request.app[READER].dead_tasks()
    if dead:
        return web.json_response({"status": "dead", "tasks": dead}, status=503)
    return web.json_response({"status": "healthy"})


def stall_problems(reader: Reader) -> list[str]:
    return [
        f"partition {p} stalled: entries held with no commit for {age:.0f}s"
        for p, age in sorted(reader.stalled().items())
    ]


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
        problems.append(f"last batch attempt failed ({reader.storage_problem}); retrying")
    problems += stall_problems(reader)
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    reader, consumer_metrics = request.app[READER], request.app[METRICS]
    consumer_metrics.update_progress(reader.states, reader.settings.stall_s)
    body = consumer_metrics.render()
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
