"""What each partition of this consumer holds and when it last made progress.

Pipeline position: shared by the partition tasks (consumer.reader), the keep-alive that
refreshes held entries (consumer.keepalive), and the health server, which derives
liveness, stalls and the stall gauge from it.
Plain in-process bookkeeping, touched once per batch (never per event).

"Held" entries are those this consumer has read or claimed and not yet finished (acked,
with or without dead-lettering): exactly the entries no other consumer should claim while
we live, and the backlog whose lack of progress is a stall.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

Entry = tuple[str, dict[bytes, bytes]]


@dataclass
class PartitionState:
    """One partition's holdings, hand-over queue and progress clock (monotonic seconds)."""

    partition: int
    held: set[str] = field(default_factory=set)
    held_since: float = 0.0
    """When the oldest unrefreshed holding was taken (or last refreshed by the keep-alive)."""
    last_progress: float = field(default_factory=time.monotonic)
    """Last commit (stored or dead-lettered entries acked), or the moment holding began."""
    reread: bool = True
    """Our pending list is to be re-read (one entry at a time) before new entries: after
    a start or a lease takeover, a failed read, or a read cut at the byte share."""
    cursor: str = "0"
    """Where the re-read of the pending list stands."""
    resumed: bool = False
    """The task has re-read what this consumer name held before (start-up pass done)."""
    largest: int = 0
    """Largest entry seen lately (bytes, decaying); reads are sized by it when it exceeds
    the entry size ingest writes."""
    marked: dict[str, int] = field(default_factory=dict)
    """In-flight marks this process set and has not finished: entry id → earlier deaths."""
    task: asyncio.Task[None] | None = None
    stall_reported: bool = False

    def take(self, ids: Iterable[str]) -> None:
        now = time.monotonic()
        if not self.held:
            self.held_since = now
            self.last_progress = now  # the stall clock starts when there is work
        self.held.update(ids)

    def finished(self, ids: Iterable[str]) -> None:
        """Entries committed (acked): progress, and no longer ours to keep alive."""
        self.held.difference_update(ids)
        self.last_progress = time.monotonic()

    def drop(self, ids: Iterable[str]) -> None:
        """Entries given up without a commit (shutdown, Redis failure): still pending."""
        self.held.difference_update(ids)

    def saw(self, size: int) -> None:
        """An entry of ``size`` bytes was read: "lately" fades over some 50 entries."""
        self.largest = max(size, self.largest - (self.largest >> 4))

    def stale_for(self, now: float, interval: float) -> bool:
        """Whether the held entries are due for a keep-alive refresh."""
        return bool(self.held) and now - self.held_since >= interval

    def stalled_for(self, now: float) -> float:
        """Seconds without progress while holding entries (0 when nothing is held)."""
        if not self.held:
            return 0.0
        return now - self.last_progress

    @property
    def alive(self) -> bool:
        """The partition task runs (or was not started yet: the store is still opening)."""
        return self.task is None or not self.task.done()
