"""Opens the configured EventStore for the ingest tier's query API (DESIGN §4, §5).

Pipeline position: the ingest tier only reads storage (the consumer writes it); the store
(asyncpg pool or NDJSON index handles) is opened when the app starts and closed with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from storage.base import EventStore
from storage.config import StorageSettings, create_store

STORE_KEY = web.AppKey("event_store", EventStore)


def store_ctx(
    settings: StorageSettings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx storing the opened store under :data:`STORE_KEY`."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = create_store(settings)
        await store.open()
        app[STORE_KEY] = store
        try:
            yield
        finally:
            await store.close()

    return ctx
