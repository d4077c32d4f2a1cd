"""Opens the configured EventStore for an HTTP tier's reads (docs/operations.md).

Pipeline position: the HTTP tiers only read storage (the consumer writes it): the query
tier for the read API, ingest for the read API when it serves reads and for invalidate's
"is there such an attempt". The store (asyncpg pool or NDJSON index handles) is opened when
the app starts and closed with it. Storage that cannot be reached at start does not stop
the process (ingest's job, bundles onto Redis, does not need it): the store is opened in
the background, retrying with backoff, and until then the read endpoints answer 503
(``webcore.middlewares``) and :data:`STORE_OPEN_KEY` says so to the readiness probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from storage.base import EventStore, StorageUnavailable
from storage.config import StorageSettings, create_store

log = logging.getLogger(__name__)

STORE_KEY = web.AppKey("event_store", EventStore)


class StoreOpen:
    """Whether the app's store has opened (set once, by :func:`store_ctx`)."""

    def __init__(self) -> None:
        self.opened = False


STORE_OPEN_KEY = web.AppKey("event_store_open", StoreOpen)
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0


async def _open_until_done(store: EventStore, state: StoreOpen) -> None:
    delay = RETRY_MIN_S
    while True:
        await asyncio.sleep(delay)
        try:
            await store.open()
        except StorageUnavailable as exc:
            delay = min(delay * 2, RETRY_MAX_S)
            log.warning("storage still unavailable, next try in %.0f s: %s", delay, exc)
        else:
            state.opened = True
            log.info("storage opened; the read API answers again")
            return


def store_ctx(settings: StorageSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx storing the store under :data:`STORE_KEY`, opened now or in the background."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = create_store(settings)
        app[STORE_KEY] = store
        state = app[STORE_OPEN_KEY] = StoreOpen()
        opener: asyncio.Task[None] | None = None
        try:
            await store.open()
            state.opened = True
        except StorageUnavailable as exc:
            log.warning(
                "storage unavailable at start; read API answers 503 until it opens: %s", exc
            )
            opener = asyncio.create_task(_open_until_done(store, state))
        try:
            yield
        finally:
            if opener is not None:
                opener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await opener
            await store.close()

    return ctx
