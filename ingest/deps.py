"""What the query routes need from the rest of the ingest app, under one AppKey.

Pipeline position: ``create_app`` builds the Redis client and the group-commit publisher;
the read endpoints (stats) and invalidate use them through this object, so the query
modules need not import the app module (no import cycle) and tests can supply their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from redis.asyncio import Redis

from storage.queue import StreamLayout
from storage.schema import Bundle

# Queues one bundle exactly as POST /v1/events/ingest does; returns the stream entry id.
Publish = Callable[[Bundle, str], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class QueryDeps:
    """``publish`` applies the ingest path's backpressure (503 over the high-water mark);
    ``autonomy_config`` is the YAML file ``GET /v1/autonomy/status`` reads."""

    layout: StreamLayout
    redis: Callable[[], Redis]
    publish: Publish
    autonomy_config: Path = Path("/etc/leviathan/autonomy/dev.yaml")


DEPS_KEY = web.AppKey("query_deps", QueryDeps)
