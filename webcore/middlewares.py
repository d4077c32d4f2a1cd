"""Error, metrics and auth middlewares of both HTTP tiers (docs/operations.md).

Pipeline position: every request passes errors → auth → handler, errors and auth being one
middleware. Auth checks the bearer token and then the role the matched route requires
(:func:`webcore.roles.required_role`). The error middleware is the only place a client
error becomes a response: ``{"detail", "errors"}`` JSON with the right status and headers;
an unexpected exception is logged and answered with a generic 500 that reveals nothing. It
also records every request's final status and latency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter, Histogram

from storage.base import StorageUnavailable
from webcore.auth import TokenSet
from webcore.errors import Forbidden, IngestError, Unauthorized, Unavailable
from webcore.roles import required_role
from webcore.tallies import CounterTally, HistogramTally

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/console", "/favicon.ico"}
)
# The console's static files carry no data; the page asks for the token and sends it with
# every API call, so the page itself must load without one.
PUBLIC_PREFIXES = ("/console/",)
TOKEN_LABEL = web.RequestKey("token_label", str)


class RequestMetrics(Protocol):
    """What the error middleware records into: each tier's own metrics provide these
    families under its own prefix (``ingest_…``, ``query_…``)."""

    @property
    def requests(self) -> Counter: ...  # labels: route, status

    @property
    def latency(self) -> Histogram: ...  # labels: route

    @property
    def rejections(self) -> Counter: ...  # labels: reason

    def counter_tally(self, counter: Counter) -> CounterTally: ...

    def histogram_tally(self, histogram: Histogram) -> HistogramTally: ...


def error_body(status: int, detail: str, errors: list[object] | None = None) -> web.Response:
    return web.json_response({"detail": detail, "errors": errors or []}, status=status)


def _route(request: web.Request) -> str:
    route = request.match_info.route
    return route.resource.canonical if route.resource is not None else "unmatched"


class _Recorder:
    """Each request's status and latency, by route, into tallies of the labelled children.

    prometheus_client's ``labels()`` validates and locks on every call, a per-request cost
    the cache pays once per (route, status); the tallies (:mod:`webcore.tallies`) skip the
    locks of ``inc``/``observe``.
    """

    def __init__(self, metrics: RequestMetrics) -> None:
        self._metrics = metrics
        self._counters: dict[tuple[str, int], CounterTally] = {}
        self._latencies: dict[str, HistogramTally] = {}

    def __call__(self, request: web.Request, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = _route(request)
        counter = self._counters.get((route, status))
        if counter is None:
            metrics = self._metrics
            counter = metrics.counter_tally(metrics.requests.labels(route, str(status)))
            self._counters[route, status] = counter
        counter.inc()
        latency = self._latencies.get(route)
        if latency is None:
            metrics = self._metrics
            latency = metrics.histogram_tally(metrics.latency.labels(route))
            self._latencies[route] = latency
        latency.observe(elapsed)


def _rejection(metrics: RequestMetrics, request: web.Request, exc: IngestError) -> web.Response:
    metrics.rejections.labels(exc.reason).inc()
    log.info("%s %s rejected %d: %s", request.method, request.path, exc.status, exc.detail)
    response = error_body(exc.status, exc.detail, list(exc.errors))
    response.headers.update(exc.headers)
    return response


def _http_error(metrics: RequestMetrics, exc: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx/5xx (404, 405, 413 from client_max_size) in the project's shape."""
    if exc.status == 413:
        metrics.rejections.labels("body_size").inc()
    response = error_body(exc.status, exc.reason + ".")
    for name in ("Allow", "WWW-Authenticate", "Retry-After"):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


def error_middleware(
    metrics: RequestMetrics, retry_after: int = 1, tokens: TokenSet | None = None
) -> Middleware:
    """Client errors → JSON responses; every request's final status and latency recorded;
    with ``tokens``, the auth of :func:`auth_middleware` too, inside the error handling.

    One middleware for all of it because the status worth counting is the one this
    middleware decides (an error's response), and each middleware level is a coroutine
    frame and a wrapper call on every request (callgrind, ingest: ~1% of its instructions
    per level). Storage that cannot be reached (the read API's database down) is a 503 with
    ``Retry-After``, not a 500.
    """
    record = _Recorder(metrics)
    authorize = _authorizer(tokens) if tokens is not None else None

    def failed(request: web.Request, exc: Exception) -> web.Response:
        if isinstance(exc, IngestError):
            return _rejection(metrics, request, exc)
        if isinstance(exc, StorageUnavailable):
            log.warning("%s %s: %s", request.method, request.path, exc)
            detail = "Storage is unavailable; retry later."
            return _rejection(metrics, request, Unavailable(detail, retry_after, "storage"))
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_body(500, "Internal server error.")

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            if authorize is not None:
                authorize(request)
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                record(request, exc.status, started)
                raise
            response = _http_error(metrics, exc)
        except Exception as exc:
            response = failed(request, exc)
        except BaseException:  # cancelled: the client went away
            record(request, 499, started)
            raise
        record(request, response.status, started)
        return response

    return errors


def _authorizer(tokens: TokenSet) -> Callable[[web.Request], None]:
    """The bearer token and the route's role, or Unauthorized/Forbidden; the token's label
    goes on the request (:data:`TOKEN_LABEL`)."""

    def authorize(request: web.Request) -> None:
        path = request.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        presented = presented.strip()
        if not presented or scheme.lower() != "bearer":
            raise Unauthorized("A bearer token is required.")
        grant = tokens.grant_for(presented)
        if grant is None:
            raise Unauthorized("The bearer token is not valid.")
        match = request.match_info
        if match.http_exception is None:  # an unknown path or method stays a 404/405
            role = required_role(match.route.handler, request.method)
            if role not in grant.roles:
                held = "+".join(sorted(grant.roles)) or "none"
                raise Forbidden(
                    f"This token ({grant.label}, roles: {held}) lacks the {role} role "
                    f"that {request.method} {_route(request)} requires."
                )
        request[TOKEN_LABEL] = grant.label

    return authorize


def auth_middleware(tokens: TokenSet) -> Middleware:
    """The auth alone, as its own middleware (the apps pass ``tokens`` to
    :func:`error_middleware` instead, one level less)."""
    authorize = _authorizer(tokens)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        authorize(request)
        return await handler(request)

    return auth
