"""A store whose statement timeouts count as data errors, for a batch that keeps timing out.

Pipeline position: consumer.reader retries a batch whose write PostgreSQL cancelled after
its statement timeout (SQLSTATE 57014, :class:`~storage.base.StorageTimeout`) like any
transient failure, but only ``LEVIATHAN_CONSUMER_TIMEOUT_RETRIES`` times: a batch that
times out on every attempt would stall its partition for good. After that the reader
writes the batch through this wrapper, so consumer.isolate bisects it like a batch with
bad data: the parts that fit in the timeout are stored, an entry that times out on its
own is dead-lettered as ``unstorable``. Every other failure passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.base import BatchResult, EventStore, StorageDataError, StorageTimeout
from storage.envelope import Envelope


class TimeoutsAsData:
    """Wraps an :class:`EventStore`; ``write_batch`` turns StorageTimeout into data."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        try:
            return await self.inner.write_batch(partition, envelopes)
        except StorageTimeout as exc:
            raise StorageDataError(f"{exc} (timed out on every retry)") from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
