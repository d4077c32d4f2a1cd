"""What the read API needs from the process that serves it, under one AppKey.

Pipeline position: the query tier's own app (``query.app.create_app``) and an ingest app
that also serves reads both build one :class:`QueryDeps` (the Redis client for
``/v1/stats``, the stream layout, the autonomy file), so the read modules never import
the process that hosts them and tests can supply their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from redis.asyncio import Redis

from storage.queue import StreamLayout


@dataclass(frozen=True, slots=True)
class QueryDeps:
    """``redis`` is called per request (the host app may replace its client);
    ``autonomy_config`` is the YAML file ``GET /v1/autonomy/status`` reads."""

    layout: StreamLayout
    redis: Callable[[], Redis]
    autonomy_config: Path = Path("/etc/leviathan/autonomy/dev.yaml")


DEPS_KEY = web.AppKey("query_deps", QueryDeps)
