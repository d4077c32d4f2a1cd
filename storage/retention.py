"""Retention rules both backends share: where a partition's chain may be cut.

Pipeline position: called by each backend's ``retain`` (``leviathan-cp retain`` and the
consumer's maintenance when ``LEVIATHAN_RETENTION_DAYS`` is set). Retention is by arrival
(``received_at``), never by the event's own timestamp, and removes only a prefix of each
partition's chain, so the remaining events still form one chain that starts at the
checkpoint. An event that arrived before the cut but was stored after one that arrived
later (a redelivery) stays until everything before it may go.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.base import Retained
from storage.chain import Checkpoint
from storage.schema import parse_timestamp

# One batch of a partition's prefix removed: (events removed, the new checkpoint, whether
# the batch was full, i.e. more may follow), or None when nothing arrived before the cut.
Step = Callable[[], Awaitable[tuple[int, Checkpoint, bool] | None]]


def arrival(text: str) -> float:
    """Epoch seconds of a stored ``received_at`` text."""
    return parse_timestamp(text).timestamp()


def prefix_end(events: Iterable[Any], before: float) -> tuple[Any | None, int]:
    """The last event of the leading run of ``events`` (seq order; objects with a
    ``received_at`` attribute or rows with such a key) that arrived before ``before``, and
    how many there are; stops at the first event that arrived at or after the cut."""
    last, count = None, 0
    for ev in events:
        text = ev["received_at"] if hasattr(ev, "keys") else ev.received_at
        if arrival(text) >= before:
            break
        last, count = ev, count + 1
    return last, count


async def pause_like(began: float) -> None:
    """Sleep as long as the batch that began at ``began`` (monotonic) took: retention
    uses at most about half of the time, whatever the batch costs on this host."""
    await asyncio.sleep(min(5.0, time.monotonic() - began))


async def retain_partition(partition: int, step: Step) -> Retained | None:
    """Remove a partition's prefix batch by batch, pausing after each full one as long as
    it took, until a batch comes back short; what was removed, or None for nothing."""
    removed, point = 0, None
    while True:
        began = time.monotonic()
        batch = await step()
        if batch is None:
            break
        count, point, full = batch
        removed += count
        if not full:
            break
        await pause_like(began)
    return Retained(partition, removed, point) if removed else None


def cut_of_days(days: float, now: float | None = None) -> float:
    """The cut ``days`` before ``now`` (epoch seconds)."""
    base = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    return (base - timedelta(days=days)).timestamp()


def parse_cut(text: str) -> float:
    """``--before``: an ISO date or date-time; naive means UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
