"""Ingest and health handlers (README "The contract").

Pipeline position: ``POST /v1/events/ingest`` = in-flight budget (grown as the body
arrives, then to its estimated parse cost) → body → backpressure
check → entries → group-commit XADD into the bundle's partition (one MULTI/EXEC when the
bundle was split) → optional ``?wait=`` for the consumer's commit of every entry. The
budget is given back once Redis answered the XADD: a waiting request holds only its ids
and counts. ``/healthz`` does no I/O; ``/readyz`` pings Redis and reports draining.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ingest import waiters
from ingest.backpressure import LagGauge, QueueState
from ingest.body import Limits, read_prepared
from ingest.budget import Budget
from ingest.entry import entry_fields
from ingest.metrics import IngestMetrics
from ingest.publisher import Publisher
from ingest.settings import IngestSettings
from ingest.upload import RAW_SLACK, describe_size
from ingest.waiters import Waiters
from storage.queue import StreamLayout, resolve
from storage.schema import Bundle
from webcore.errors import Unavailable, Unprocessable
from webcore.middlewares import TOKEN_LABEL
from webcore.roles import Role, requires

log = logging.getLogger(__name__)
MAX_WAIT_S = 30.0
__all__ = ["RAW_SLACK", "Runtime", "ingest_routes", "json_bytes"]


@dataclass
class Runtime:
    """Everything the handlers share; built by ``create_app``."""

    settings: IngestSettings
    redis: Redis
    metrics: IngestMetrics
    publisher: Publisher
    lag: LagGauge
    waiters: Waiters
    budget: Budget
    draining: bool = False
    ready_at: float = field(default_factory=time.monotonic)

    @property
    def max_raw(self) -> int:
        return self.settings.max_body_bytes + RAW_SLACK

    async def publish(self, bundle: Bundle, token_label: str) -> str:
        """Queue one bundle like POST /v1/events/ingest (its encoder), backpressure included."""
        await admit(self)
        layout = self.settings.layout
        partition = layout.partition_of(bundle.bundle_id)
        return await self.publisher.publish(
            layout.stream(partition), entry_fields(bundle, token_label)
        )


def json_bytes(data: object, status: int = 200) -> web.Response:
    """A JSON response serialised by orjson (``web.json_response`` uses the stdlib)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _wait_param(request: web.Request) -> float | None:
    if not request.query_string:  # the common case: no query to parse
        return None
    text = request.query.get("wait")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_WAIT_S:  # also rejects nan and inf
        raise Unprocessable(
            f"Query parameter wait must be a number of seconds in (0, {MAX_WAIT_S:g}].",
            errors=[{"loc": ["query", "wait"], "msg": "must be > 0 and <= 30"}],
        )
    return value


def _check_queue(rt: Runtime, state: QueueState) -> None:
    """503 naming the mark passed: the group's lag in entries, or Redis' memory."""
    settings = rt.settings
    if state.lag > settings.queue_high_water:
        raise Unavailable(
            f"The queue is over its high-water mark of {settings.queue_high_water} entries "
            "not yet delivered to consumers; retry later.",
            settings.retry_after_seconds,
            reason="backpressure",
        )
    mark = state.memory_mark(settings.queue_high_water_bytes)
    if state.used_memory > mark:
        raise Unavailable(
            f"Redis memory use is over its high-water mark of {describe_size(mark)}; retry later.",
            settings.retry_after_seconds,
            reason="backpressure_memory",
        )


async def _measured_lag(rt: Runtime) -> QueueState:
    """The lag when no usable cached reading exists (start-up, or Redis was unreachable)."""
    try:
        return await asyncio.wait_for(rt.lag.lag(), rt.settings.redis_timeout_seconds)
    except (RedisError, OSError, TimeoutError):
        raise Unavailable("The queue is unreachable.", rt.settings.retry_after_seconds) from None


async def admit(rt: Runtime) -> None:
    """Raise 503 while the queue is over a high-water mark (or its state is unknowable)."""
    state = rt.lag.cached()  # the common case: no timer, no await
    _check_queue(rt, state if state is not None else await _measured_lag(rt))


async def _queue(
    rt: Runtime, request: web.Request, limits: Limits, layout: StreamLayout, streams: list[str]
) -> tuple[str, int, list[str], int]:
    """Read, validate and queue one bundle within the budget; nothing of it is kept.

    Returns the bundle id, the partition, the entry ids and the event count.
    """
    # grown as the body arrives and is parsed; it holds nothing yet, so no `async with`
    # (its __aenter__ and __aexit__ were two coroutines per request that do nothing here)
    grant = rt.budget.reserve()
    try:
        prepared = await read_prepared(request, limits, grant)
        await admit(rt)
        bundle_id, count = prepared.bundle_id, prepared.count
        partition = layout.partition_of(bundle_id)
        entries = prepared.entries(request[TOKEN_LABEL], limits.entry_max, limits.max_event)
        rt.metrics.bundle_bytes_tally.observe(prepared.size)
        del prepared
        if len(entries) == 1:
            ids = [await rt.publisher.publish(streams[partition], entries[0])]
        else:
            ids = await rt.publisher.publish_atomic(streams[partition], entries)
        rt.metrics.bundle_entries_tally.observe(len(entries))
    finally:
        grant.release()
    return bundle_id, partition, ids, count


def ingest_routes(rt: Runtime) -> web.RouteTableDef:
    routes = web.RouteTableDef()
    settings = rt.settings
    layout = settings.layout  # a property that builds a new StreamLayout on every access
    streams = layout.streams()
    limits = Limits.of(settings)

    @routes.post("/v1/events/ingest")
    @requires(Role.INGEST)
    async def ingest(request: web.Request) -> web.Response:
        wait = _wait_param(request) or settings.default_wait_seconds or None
        bundle_id, partition, ids, count = await _queue(rt, request, limits, layout, streams)
        rt.metrics.bundle_events_tally.observe(count)
        if wait is not None:
            # every entry of a split bundle: the answer sums their counts
            counts = await rt.waiters.wait_all([(partition, i) for i in ids], wait)
            if counts is not None:
                return json_bytes(waiters.answer(bundle_id, count, counts))
        body = {"status": "accepted", "bundle_id": bundle_id, "ingested": count}
        return json_bytes(body, status=202)

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "healthy"})

    @routes.get("/readyz")
    async def readyz(request: web.Request) -> web.Response:
        if rt.draining:
            return web.json_response({"status": "draining", "detail": "Shutting down."}, status=503)
        try:
            await asyncio.wait_for(resolve(rt.redis.ping()), settings.redis_timeout_seconds)
        except (RedisError, OSError, TimeoutError) as exc:
            detail = f"Redis is unreachable ({type(exc).__name__})."
            return web.json_response({"status": "unavailable", "detail": detail}, status=503)
        if not rt.publisher.running:
            detail = "The queue publisher is not running."
            return web.json_response({"status": "unavailable", "detail": detail}, status=503)
        return web.json_response({"status": "ready"})

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(rt.metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return routes
