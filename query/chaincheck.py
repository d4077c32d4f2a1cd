"""Chain status for the read API without re-reading the whole log each time.

Pipeline position: ingest tier, read side. ``GET /v1/events/verify`` (the console polls it)
asks :class:`VerifiedPrefixes`, which remembers, per partition, where the last successful
check ended (sequence and hash) and has the store walk only the events after it
(:meth:`storage.base.EventStore.verify_chain` with ``after``). The stored event at the
remembered point must still carry the remembered hash, so a log rewritten or cut under it
is reported; an edit *inside* the prefix is found by a full walk (``leviathan-cp verify
--full``). Checks run one at a time, so several open consoles share the work instead of
each walking the same new events.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from storage.base import EventStore
from storage.chain import ChainPoint
from storage.views import ChainStatus


class VerifiedPrefixes:
    """Per-partition end of the verified prefix, for the life of the process."""

    def __init__(self) -> None:
        self._points: dict[int, ChainPoint] = {}
        self._lock = asyncio.Lock()

    async def check(self, store: EventStore, partition: int) -> ChainStatus:
        async with self._lock:
            status = await store.verify_chain(partition, after=self._points.get(partition))
            if status.ok:
                self._points[partition] = ChainPoint(status.checked, status.last_hash)
            # a broken chain keeps the last good point: every later check walks to the
            # same break again and reports it
            return status


PREFIXES_KEY = web.AppKey("verified_prefixes", VerifiedPrefixes)
