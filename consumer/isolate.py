"""Store a batch, isolating the entries storage refuses by bisection.

Pipeline position: between the reader's decoded batch and ``store.write_batch``. The whole
batch is written in one call (the happy path: one write, nothing else). When the write
fails with anything but a transient error, the batch is split in halves and each half is
written on its own, recursively, in stream order: the healthy parts are stored (and handed
to ``on_stored`` to be acked right away), and an entry that fails on its own is handed to
``on_unstorable`` to be dead-lettered. One bad entry among n costs about 2·log2(n) extra
writes; the partition keeps flowing.

Transient failures are never bisected: :class:`StorageUnavailable` (and
:class:`StorageCorrupt`, which only an operator can fix) propagate, at any depth, so the
caller keeps what is left pending and retries it. Before an entry is dead-lettered the
store is pinged once: an error that was really an outage the backend did not recognise
is then treated as one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from storage.base import BatchResult, EventStore, StorageCorrupt, StorageUnavailable
from storage.envelope import Envelope

TRANSIENT: tuple[type[Exception], ...] = (StorageUnavailable, StorageCorrupt)

OnStored = Callable[[Sequence[Envelope], BatchResult], Awaitable[None]]
OnUnstorable = Callable[[Envelope, Exception], Awaitable[None]]


async def store_isolating(
    store: EventStore,
    partition: int,
    envelopes: Sequence[Envelope],
    on_stored: OnStored,
    on_unstorable: OnUnstorable,
) -> None:
    """Write ``envelopes``; raises only transient storage errors (or the callbacks' own)."""
    if not envelopes:
        return
    try:
        result = await store.write_batch(partition, envelopes)
    except TRANSIENT:
        raise
    except Exception as exc:  # a data error, or one the backend did not classify
        if len(envelopes) > 1:
            mid = len(envelopes) // 2
            await store_isolating(store, partition, envelopes[:mid], on_stored, on_unstorable)
            await store_isolating(store, partition, envelopes[mid:], on_stored, on_unstorable)
            return
        await _confirm_reachable(store, exc)
        await on_unstorable(envelopes[0], exc)
        return
    await on_stored(envelopes, result)


async def _confirm_reachable(store: EventStore, error: Exception) -> None:
    """Raise :class:`StorageUnavailable` if the store cannot answer a ping right now."""
    try:
        await store.ping()
    except Exception as exc:
        raise StorageUnavailable(
            f"write failed ({type(error).__name__}) and the store does not answer ({exc})"
        ) from error
