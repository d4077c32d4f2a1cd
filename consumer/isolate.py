"""Store a batch, isolating what storage refuses: entries by bisection, then their events.

Pipeline position: between the reader's decoded batch and ``store.write_batch``. The whole
batch is written in one call (the happy path: one write, nothing else). When the write
fails with anything but a transient error, the batch is split in halves and each half is
written on its own, recursively, in stream order: the healthy parts are stored (and handed
to ``on_stored`` to be acked right away). One bad entry among n costs about 2·log2(n)
extra writes; the partition keeps flowing.

An entry that fails on its own may still hold hundreds of good events (a chunk of a large
bundle holds up to the entry size's worth), so its events are bisected the same way, each
part written as an envelope of the same entry holding a slice of its events: the parts
that store are stored, and only the events that fail alone are refused. The entry's
artifacts (chunk 0 carries them) are written last, with the entry's good events again (as
duplicates, dropped by storage) so they are linked to the same attempt as in one write.
The entry is then handed to ``on_unstorable`` once, as a :class:`Refused` saying what was
stored and which events (by index in the entry) failed with which error; it is acked and
its refused events dead-lettered in one step by the caller. When every event fails alone
(or the entry holds one) the whole entry is refused, as before.

Transient failures are never bisected: :class:`StorageUnavailable` (and
:class:`StorageCorrupt`, which only an operator can fix) propagate, at any depth, so the
caller keeps what is left pending and retries it (a part already stored is then a
duplicate, dropped). Before anything is refused the store is pinged once: an error that
was really an outage the backend did not recognise is then treated as one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from storage.base import (
    BatchResult,
    EntryOutcome,
    EventStore,
    StorageCorrupt,
    StorageUnavailable,
)
from storage.envelope import Envelope

TRANSIENT: tuple[type[Exception], ...] = (StorageUnavailable, StorageCorrupt)
ARTIFACTS = -1
"""The index :class:`Refused` gives the entry's artifacts when they fail on their own."""


@dataclass(frozen=True, slots=True)
class Refused:
    """One entry storage refuses on its own, and what of it was stored after all.

    ``events`` holds ``(index in the entry, error)`` of each event that fails alone
    (:data:`ARTIFACTS` for the entry's artifacts); empty when the entry is refused whole.
    ``stored`` sums the writes of its parts that succeeded (None when nothing was).
    """

    envelope: Envelope
    error: Exception
    events: tuple[tuple[int, Exception], ...] = ()
    stored: BatchResult | None = None

    @property
    def whole(self) -> bool:
        return not self.events


OnStored = Callable[[Sequence[Envelope], BatchResult], Awaitable[None]]
OnUnstorable = Callable[[Refused], Awaitable[None]]


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
        refused = await _isolate_events(store, partition, envelopes[0], exc)
        if refused.stored is not None and refused.whole:
            # every part stored on its own (the events conflicted only together)
            await on_stored(envelopes, refused.stored)
        else:
            await on_unstorable(refused)
        return
    await on_stored(envelopes, result)


def part_of(envelope: Envelope, indexes: Sequence[int], artifacts: bool = False) -> Envelope:
    """The envelope of one entry holding only its events at ``indexes`` (and its artifacts
    with ``artifacts``): same entry id, bundle id, chunk and texts."""
    bundle = envelope.bundle
    timestamps, payloads = envelope.texts()
    return Envelope(
        bundle=bundle.model_copy(
            update={
                "events": [bundle.events[i] for i in indexes],
                "artifacts": bundle.artifacts if artifacts else None,
            }
        ),
        received_at=envelope.received_at,
        token_label=envelope.token_label,
        entry_id=envelope.entry_id,
        version=envelope.version,
        payloads=tuple(payloads[i] for i in indexes),
        timestamps=tuple(timestamps[i] for i in indexes),
        chunk=envelope.chunk,
        chunks=envelope.chunks,
    )


@dataclass
class _Parts:
    """The outcome of bisecting one entry's events."""

    entry_id: str
    bad: list[tuple[int, Exception]] = field(default_factory=list)
    results: list[BatchResult] = field(default_factory=list)

    def total(self) -> BatchResult | None:
        """The stored parts' writes as one result (None when no part stored)."""
        if not self.results:
            return None
        written = sum(r.written for r in self.results)
        revisions = sum(r.revisions for r in self.results)
        duplicates = sum(r.duplicates for r in self.results)
        outcome = EntryOutcome(written - revisions, revisions, duplicates)
        return BatchResult(written, duplicates, revisions, {self.entry_id: outcome})


async def _isolate_events(
    store: EventStore, partition: int, envelope: Envelope, error: Exception
) -> Refused:
    """Bisect the events of one refused entry; see the module docstring."""
    n = len(envelope.bundle.events)
    # an outage the backend did not classify must not cost a bisection of every entry
    await _confirm_reachable(store, error)
    if n <= 1:
        return Refused(envelope, error)
    parts = _Parts(envelope.entry_id)
    # the entry failed as a whole already: start with its halves
    await _bisect(store, partition, envelope, range(0, n // 2), parts)
    await _bisect(store, partition, envelope, range(n // 2, n), parts)
    if len(parts.bad) == n:
        return Refused(envelope, error)  # no event of it stores: the entry as it came
    if envelope.bundle.artifacts:
        refused = {i for i, _ in parts.bad}
        good = [i for i in range(n) if i not in refused]
        try:  # its events were just stored: duplicates now, there for the artifacts' attempt
            await store.write_batch(partition, [part_of(envelope, good, artifacts=True)])
        except TRANSIENT:
            raise
        except Exception as exc:
            await _confirm_reachable(store, exc)
            parts.bad.append((ARTIFACTS, exc))
    return Refused(envelope, error, tuple(parts.bad), parts.total())


async def _bisect(
    store: EventStore, partition: int, envelope: Envelope, indexes: range, parts: _Parts
) -> None:
    if not indexes:
        return
    try:
        result = await store.write_batch(partition, [part_of(envelope, indexes)])
    except TRANSIENT:
        raise
    except Exception as exc:
        if len(indexes) > 1:
            mid = len(indexes) // 2
            await _bisect(store, partition, envelope, indexes[:mid], parts)
            await _bisect(store, partition, envelope, indexes[mid:], parts)
            return
        await _confirm_reachable(store, exc)
        parts.bad.append((indexes[0], exc))
        return
    parts.results.append(result)


async def _confirm_reachable(store: EventStore, error: Exception) -> None:
    """Raise :class:`StorageUnavailable` if the store cannot answer a ping right now."""
    try:
        await store.ping()
    except Exception as exc:
        raise StorageUnavailable(
            f"write failed ({type(error).__name__}) and the store does not answer ({exc})"
        ) from error
