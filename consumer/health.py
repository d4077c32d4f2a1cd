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

from aiohttp import web

from consumer.metrics import ConsumerMetrics
from consumer.probes import (
    HealthServerError,
    metrics_response,
    probe,
    probe_app,
    readiness,
    redis_problem,
    serve,
)
from consumer.reader import Reader

__all__ = ["HealthServerError", "create_app", "start"]

READER = web.AppKey("reader", Reader)
METRICS = web.AppKey("metrics", ConsumerMetrics)


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
    problems: list[str] = ["draining"] if reader.stopping else []
    for problem in (await redis_problem(reader.redis), await probe("storage", reader.store.ping())):
        if problem is not None:
            problems.append(problem)
    if not reader.storage_ok:
        problems.append(f"last batch attempt failed ({reader.storage_problem}); retrying")
    problems += stall_problems(reader)
    return readiness(problems)


async def metrics(request: web.Request) -> web.Response:
    reader, consumer_metrics = request.app[READER], request.app[METRICS]
    consumer_metrics.update_progress(reader.states, reader.settings.stall_s)
    return metrics_response(consumer_metrics.render())


def create_app(reader: Reader, consumer_metrics: ConsumerMetrics) -> web.Application:
    app = probe_app(healthz, readyz, metrics)
    app[READER] = reader
    app[METRICS] = consumer_metrics
    return app


async def start(reader: Reader, consumer_metrics: ConsumerMetrics) -> web.AppRunner:
    """Serve on the configured host/port; the caller cleans the runner up on shutdown."""
    app = create_app(reader, consumer_metrics)
    settings = reader.settings
    return await serve(app, settings.health_host, settings.health_port, "LEVIATHAN_CONSUMER_PORT")
