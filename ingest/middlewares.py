"""Error, metrics and auth middlewares of the ingest app (DESIGN §2, §5).

Pipeline position: every request passes metrics → errors → auth → handler. The error
middleware is the only place a client error becomes a response: ``{"detail", "errors"}``
JSON with the right status and headers; an unexpected exception is logged and answered
with a generic 500 that reveals nothing.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter, Histogram

from ingest.auth import TokenSet
from ingest.errors import IngestError, Unauthorized
from ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/console"})
# The console's static files carry no data; the page asks for the token and sends it with
# every API call, so the page itself must load without one.
PUBLIC_PREFIXES = ("/console/",)
TOKEN_LABEL = web.RequestKey("token_label", str)


def error_body(status: int, detail: str, errors: list[object] | None = None) -> web.Response:
    return web.json_response({"detail": detail, "errors": errors or []}, status=status)


def _route(request: web.Request) -> str:
    route = request.match_info.route
    return route.resource.canonical if route.resource is not None else "unmatched"


def metrics_middleware(metrics: IngestMetrics) -> Middleware:
    # Labelled children cached by label values: prometheus_client's labels() validates and
    # locks on every call, a per-request cost the cache pays once per (route, status).
    counters: dict[tuple[str, int], Counter] = {}
    latencies: dict[str, Histogram] = {}

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            elapsed = time.perf_counter() - start
            route = _route(request)
            counter = counters.get((route, status))
            if counter is None:
                counter = counters[route, status] = metrics.requests.labels(route, str(status))
            counter.inc()
            latency = latencies.get(route)
            if latency is None:
                latency = latencies[route] = metrics.latency.labels(route)
            latency.observe(elapsed)

    return record


def error_middleware(metrics: IngestMetrics) -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except IngestError as exc:
            metrics.rejections.labels(exc.reason).inc()
            log.info("%s %s rejected %d: %s", request.method, request.path, exc.status, exc.detail)
            response = error_body(exc.status, exc.detail, list(exc.errors))
            response.headers.update(exc.headers)
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 413:
                metrics.rejections.labels("body_size").inc()
            response = error_body(exc.status, exc.reason + ".")
            for name in ("Allow", "WWW-Authenticate", "Retry-After"):
                if name in exc.headers:
                    response.headers[name] = exc.headers[name]
            return response
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_body(500, "Internal server error.")

    return errors


def auth_middleware(tokens: TokenSet) -> Middleware:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized("A bearer token is required.")
        label = tokens.label_for(presented.strip())
        if label is None:
            raise Unauthorized("The bearer token is not valid.")
        request[TOKEN_LABEL] = label
        return await handler(request)

    return auth
