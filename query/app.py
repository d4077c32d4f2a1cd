"""The read tier's aiohttp application, and the hook that mounts the read API elsewhere.

Pipeline position: beside ingest, reading storage only. :func:`mount` adds the read API,
the operator console and ``/openapi.json`` to an app: the query tier's own (built by
:func:`create_app` for ``leviathan-cp query``) or an ingest app that also serves reads
(``LEVIATHAN_INGEST_SERVE_READS``, the default, so the original's clients keep one URL for
everything). The query tier refuses writes: ``POST /v1/events/ingest`` and the operator
write endpoints are not routes here (404/405), the prod Ingress sends them to ingest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from query import console
from query.chaincheck import PREFIXES_KEY, VerifiedPrefixes
from query.deps import DEPS_KEY, QueryDeps
from query.metrics import QueryMetrics
from query.openapi import openapi_routes
from query.routes import query_routes
from query.settings import QuerySettings
from storage.queue import resolve
from webcore.auth import TokenSet
from webcore.middlewares import error_middleware
from webcore.store_ctx import STORE_OPEN_KEY, store_ctx

log = logging.getLogger(__name__)

SETTINGS_KEY = web.AppKey("query_settings", QuerySettings)
METRICS_KEY = web.AppKey("query_metrics", QueryMetrics)
REDIS_KEY = web.AppKey("query_redis", Redis)
# Set on SIGTERM: readiness answers 503 so the load balancer stops sending reads first.
DRAINING_KEY = web.AppKey("query_draining", asyncio.Event)


def mount(app: web.Application, deps: QueryDeps) -> None:
    """Adds the read routes, the console and /openapi.json to ``app``.

    The host opens the store (:func:`webcore.store_ctx.store_ctx`) and installs the auth and
    error middlewares; the read routes require the ``read`` role like everywhere else.
    """
    app[DEPS_KEY] = deps
    app[PREFIXES_KEY] = VerifiedPrefixes()
    app.add_routes(query_routes())
    app.add_routes(openapi_routes(deps.layout.partitions))
    app.add_routes(console.routes)


def _health_routes(settings: QuerySettings) -> list[web.RouteDef]:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "healthy"})

    async def readyz(request: web.Request) -> web.Response:
        """Ready once the store is open; Redis only matters for /v1/stats, so its absence is
        reported in the body but keeps the tier serving the rest of the read API."""
        if request.app[DRAINING_KEY].is_set():
            return web.json_response({"status": "draining", "detail": "Shutting down."}, status=503)
        if not request.app[STORE_OPEN_KEY].opened:
            detail = "Storage is not open yet."
            return web.json_response({"status": "unavailable", "detail": detail}, status=503)
        try:
            await asyncio.wait_for(
                resolve(request.app[REDIS_KEY].ping()), settings.redis_timeout_seconds
            )
        except (RedisError, OSError, TimeoutError) as exc:
            detail = f"Redis is unreachable ({type(exc).__name__}): /v1/stats answers 503."
            return web.json_response({"status": "ready", "detail": detail})
        return web.json_response({"status": "ready"})

    async def metrics(request: web.Request) -> web.Response:
        registry = request.app[METRICS_KEY]
        registry.storage_open.set(1 if request.app[STORE_OPEN_KEY].opened else 0)
        response = web.Response(body=generate_latest(registry.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]


def create_app(settings: QuerySettings, redis: Redis | None = None) -> web.Application:
    """The query tier on its own; ``redis`` lets tests inject a client."""
    timeout = settings.redis_timeout_seconds
    client = (
        redis
        if redis is not None
        else settings.stream_redis(
            socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
    )
    metrics = QueryMetrics()
    app = web.Application(
        middlewares=[
            error_middleware(
                metrics, settings.retry_after_seconds, TokenSet.from_settings(settings)
            ),
        ],
    )
    app[SETTINGS_KEY] = settings
    app[METRICS_KEY] = metrics
    app[REDIS_KEY] = client
    app[DRAINING_KEY] = asyncio.Event()

    async def close_redis(app: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    app.cleanup_ctx.append(store_ctx(settings))
    app.cleanup_ctx.append(close_redis)
    mount(
        app,
        QueryDeps(
            layout=settings.layout,
            redis=lambda: client,
            autonomy_config=settings.autonomy_config_path,
        ),
    )
    app.add_routes(_health_routes(settings))
    log.info("query tier: read API, console and /openapi.json; no write endpoints")
    return app
