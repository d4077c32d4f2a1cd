"""What decoding and writing an entry will cost in memory, and the process-wide budget.

Pipeline position: between reading a batch (consumer.reader) and decoding it. Entry bytes
are a poor measure of what an entry costs once parsed: a 4 MiB string costs little more
than its bytes, 3 MiB of ``{},{},…`` becomes a million dicts (~90 bytes each) and the
pydantic models around them. :func:`estimate` counts the JSON tokens that become Python
objects (containers and the separators between members; ``bytes.count`` runs at memory
speed) and charges each, conservatively, what orjson + pydantic + storage cost for it.
Ordinary entries (at most ``LEVIATHAN_STREAM_ENTRY_MAX_BYTES``, the most an entry ingest
writes can cost is ~23 MiB) are charged their bytes: their batches are bounded by
``LEVIATHAN_CONSUMER_BATCH_BYTES``. Tokens are counted for the larger ones, single events
past the entry size, which is what catches entries dense in tokens.

:class:`Budget` bounds the sum of the estimates of the batches being decoded and written
at once over all partitions (``LEVIATHAN_CONSUMER_MEMORY_BYTES``): a batch waits until
its cost fits beside the others, one that is alone always proceeds. An entry whose
estimate alone exceeds the budget can never be decoded within it: the reader
dead-letters it (reason ``oversized``) instead of letting the process be OOM-killed on
every delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

# Calibrated with the NDJSON store (decode + write of one entry, RSS growth): a value
# (one per comma) ~80 bytes, a key/value pair (one per colon) ~170 more, a container ~16
# on top, a byte of text about two copies of itself. Structural characters inside
# strings are counted too: the estimate errs on the high side.
PER_BYTE = 2
PER_CONTAINER = 16
PER_VALUE = 80
PER_PAIR = 176
MIB = 1024 * 1024


def estimate(fields: Mapping[bytes, bytes], plain_below: int = 0) -> int:
    """Conservative bytes of memory decoding and writing this entry will take at peak.

    Entries of at most ``plain_below`` bytes (what ingest writes as one entry) are charged
    by their size alone: counting tokens costs about a tenth of a batch's write time, and
    their batch is bounded by its bytes already."""
    raw = fields.get(b"bundle", b"")
    if len(raw) <= plain_below:
        return PER_BYTE * len(raw)
    containers = raw.count(b"{") + raw.count(b"[")
    return (
        PER_BYTE * len(raw)
        + PER_CONTAINER * containers
        + PER_VALUE * raw.count(b",")
        + PER_PAIR * raw.count(b":")
    )


class Budget:
    """Process-wide bound on the estimated cost of the batches in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = asyncio.Condition()

    def fits_alone(self, cost: int) -> bool:
        return cost <= self.limit

    @contextlib.asynccontextmanager
    async def hold(self, cost: int) -> AsyncIterator[None]:
        """Wait until ``cost`` fits beside what is in flight (or nothing is), hold it."""
        cost = min(cost, self.limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0 or self.used + cost <= self.limit)
            self.used += cost
        try:
            yield
        finally:
            async with self._changed:
                self.used -= cost
                self._changed.notify_all()
