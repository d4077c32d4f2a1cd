"""Health server of ``leviathan-cp forward``: /healthz, /readyz, /metrics.

Pipeline position: started by consumer.forwarder.main on ``LEVIATHAN_SPIDER_PORT`` (inside
the consumer process the forwarder's metrics are on the consumer's own /metrics and its
state never touches the consumer's probes). /healthz is liveness without I/O: a forwarder
loop turned recently. /readyz is 503 while draining, while Redis does not answer, and once
Spider has failed every POST for ``LEVIATHAN_SPIDER_UNREADY_AFTER_S`` — the forwarder is
then alive but not doing its job, which is what an operator's alert should see; restarting
it would not help, so liveness stays green.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from consumer.forwarder.forward import Forwarder

logger = logging.getLogger(__name__)

FORWARDER = web.AppKey("forwarder", Forwarder)
PROBE_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    fwd = request.app[FORWARDER]
    age = time.monotonic() - fwd.heartbeat
    if age > fwd.settings.spider_heartbeat_max_age_s:
        return web.json_response(
            {"status": "stalled", "heartbeat_age_s": round(age, 1)}, status=503
        )
    return web.json_response({"status": "healthy"})


async def readyz(request: web.Request) -> web.Response:
    fwd = request.app[FORWARDER]
    problems: list[str] = []
    if fwd.stopping:
        problems.append("draining")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await fwd.redis.ping()
    except Exception as exc:  # any failure means not ready; the reason is reported
        problems.append(f"redis: {type(exc).__name__}")
    down = fwd.unreachable_for()
    if down > fwd.settings.spider_unready_after_s:
        problems.append(f"spider: failing for {down:.0f}s")
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[FORWARDER].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(forwarder: Forwarder) -> web.Application:
    app = web.Application()
    app[FORWARDER] = forwarder
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class HealthServerError(RuntimeError):
    """The health port cannot be served (e.g. already in use)."""


async def start(forwarder: Forwarder) -> web.AppRunner:
    """Serve on LEVIATHAN_SPIDER_HOST/PORT; the caller cleans the runner up."""
    runner = web.AppRunner(create_app(forwarder), access_log=None)
    await runner.setup()
    host, port = forwarder.settings.spider_health_host, forwarder.settings.spider_health_port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise HealthServerError(
            f"cannot serve /healthz and /metrics on {host}:{port} (LEVIATHAN_SPIDER_PORT): "
            f"{exc.strerror or exc}"
        ) from None
    logger.info("spider forwarder health server on %s", runner.addresses)
    return runner
