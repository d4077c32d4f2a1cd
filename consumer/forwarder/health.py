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

import time

from aiohttp import web

from consumer.forwarder.forward import Forwarder
from consumer.probes import HealthServerError, metrics_response, probe_app, readiness, redis_problem
from consumer.probes import serve as serve_probes

__all__ = ["HealthServerError", "create_app", "start"]

FORWARDER = web.AppKey("forwarder", Forwarder)


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
    problems: list[str] = ["draining"] if fwd.stopping else []
    redis = await redis_problem(fwd.redis)
    if redis is not None:
        problems.append(redis)
    down = fwd.unreachable_for()
    if down > fwd.settings.spider_unready_after_s:
        problems.append(f"spider: failing for {down:.0f}s")
    return readiness(problems)


async def metrics(request: web.Request) -> web.Response:
    return metrics_response(request.app[FORWARDER].metrics.render())


def create_app(forwarder: Forwarder) -> web.Application:
    app = probe_app(healthz, readyz, metrics)
    app[FORWARDER] = forwarder
    return app


async def start(forwarder: Forwarder) -> web.AppRunner:
    """Serve on LEVIATHAN_SPIDER_HOST/PORT; the caller cleans the runner up."""
    settings = forwarder.settings
    host, port = settings.spider_health_host, settings.spider_health_port
    return await serve_probes(create_app(forwarder), host, port, "LEVIATHAN_SPIDER_PORT")
