"""``leviathan-cp export``: every stored event, every revision, as NDJSON.

Pipeline position: a reader of the storage, like the query API. It pages through
:meth:`storage.base.EventStore.list_events` — the method behind ``GET /v1/events`` — and
treats its cursor as opaque, so one page at a time is in memory whatever the log's size.
Each line is one event exactly as ``/v1/events`` lists it: the wire fields plus what a
faithful re-import needs (``target``, ``bundle_id``, ``received_at``, ``revision``, the
``partition`` and ``seq`` it had, ``prev_hash``/``hash``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from storage.base import EventStore

PAGE = 1000


@dataclass(slots=True)
class ExportResult:
    """``resume``: the cursor to pass as ``--after`` next time: where the listing stood
    after the last event written (the listing's position, also at its end), so a later
    export starts with the first event stored after this one — in commit order, whatever
    the partitions committed in between."""

    events: int = 0
    resume: str | None = None


async def export_events(
    store: EventStore,
    out: BinaryIO,
    *,
    after: str | None = None,
    target: str | None = None,
    page: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    result = ExportResult(resume=after)
    cursor = after
    size = PAGE if page is None else page
    while True:
        listing = await store.list_events(after=cursor, limit=size, target=target)
        if listing.items:
            out.write(
                b"".join(
                    orjson.dumps(ev.model_dump(mode="json"), option=orjson.OPT_APPEND_NEWLINE)
                    for ev in listing.items
                )
            )
            result.events += len(listing.items)
            if progress is not None:
                progress(result.events)
        result.resume = listing.position or listing.next_cursor or result.resume
        if listing.next_cursor is None:
            return result
        cursor = listing.next_cursor
