"""The small HTTP server both consumer-tier processes run for their orchestrator.

Pipeline position: beside the work loop. The writers (:mod:`consumer.health`) and the
Spider forwarder run as ``leviathan-cp forward`` (:mod:`consumer.forwarder.health`) each
decide what healthy and ready mean; this module is what they share: the three routes, the
readiness answer (503 with every reason in ``problems``), the Redis probe, the metrics
response and binding the port with a one-line error naming its variable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio import Redis

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
Handler = Callable[[web.Request], Awaitable[web.Response]]


class HealthServerError(RuntimeError):
    """The health/metrics port cannot be served (e.g. already in use)."""


def probe_app(healthz: Handler, readyz: Handler, metrics: Handler) -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def probe(name: str, check: Awaitable[object]) -> str | None:
    """``None`` when ``check`` answers within the probe timeout, else the reason."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await check
    except Exception as exc:  # any failure means not ready; the reason is reported
        return f"{name}: {type(exc).__name__}"
    return None


async def redis_problem(redis: Redis) -> str | None:
    return await probe("redis", redis.ping())


def readiness(problems: list[str]) -> web.Response:
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


def metrics_response(body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(app: web.Application, host: str, port: int, variable: str) -> web.AppRunner:
    """Serve ``app`` on host:port; the caller cleans the runner up on shutdown."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise HealthServerError(
            f"cannot serve /healthz and /metrics on {host}:{port} ({variable}): "
            f"{exc.strerror or exc}"
        ) from None
    logger.info("health server on %s", runner.addresses)
    return runner
