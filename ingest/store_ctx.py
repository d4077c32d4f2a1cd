"""Opens the configured EventStore for the ingest tier's query API (docs/operations.md).

Pipeline position: the ingest tier only reads storage (the consumer writes it); the store
(asyncpg pool or NDJSON index handles) is opened when the app starts and closed with it.
Storage that cannot be reached at start does not stop the ingest tier, whose job (bundles
onto Redis) does not need it: the store is opened in the background, retrying with backoff,
and until then the read endpoints answer 503 (``ingest.middlewares``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ingest.chaincheck import PREFIXES_KEY, VerifiedPrefixes
from storage.base import EventStore, StorageUnavailable
from storage.config import StorageSettings, create_store

log = logging.getLogger(__name__)

STORE_KEY = web.AppKey("event_store", EventStore)
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0


async def _open_until_done(store: EventStore) -> None:
    delay = RETRY_MIN_S
    while True:
        await asyncio.sleep(delay)
        try:
            await store.open()
        except StorageUnavailable as exc:
            delay = min(delay * 2, RETRY_MAX_S)
            log.warning("storage still unavailable, next try in %.0f s: %s", delay, exc)
        else:
            log.info("storage opened; the read API answers again")
            return


def store_ctx(settings: StorageSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx storing the store under :data:`STORE_KEY`, opened now or in the background."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = create_store(settings)
        app[STORE_KEY] = store
        app[PREFIXES_KEY] = VerifiedPrefixes()
        opener: asyncio.Task[None] | None = None
        try:
            await store.open()
        except StorageUnavailable as exc:
            log.warning(
                "storage unavailable at start; read API answers 503 until it opens: %s", exc
            )
            opener = asyncio.create_task(_open_until_done(store))
        try:
            yield
        finally:
            if opener is not None:
                opener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await opener
            await store.close()

    return ctx
