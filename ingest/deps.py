"""What the operator write endpoints (invalidate, backlog suggest) need, under one AppKey.

Pipeline position: ``ingest.app.create_app`` builds the group-commit publisher; the two
endpoints that record an operator's event queue it through :class:`WriteDeps.publish`,
exactly as ``POST /v1/events/ingest`` does (backpressure, 503 over the high-water mark),
without importing the app module (no import cycle); tests can supply their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from storage.schema import Bundle

# Queues one bundle exactly as POST /v1/events/ingest does; returns the stream entry id.
Publish = Callable[[Bundle, str], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class WriteDeps:
    publish: Publish


WRITE_DEPS_KEY = web.AppKey("write_deps", WriteDeps)
