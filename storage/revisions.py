"""Duplicate or revision: how each event of a batch is sorted against what is stored.

Pipeline position: both backends' write planners (:mod:`storage.ndjson.write`,
:mod:`storage.postgres.write`) read the stored ``(event_id, digest, revision)`` rows of a batch's
event_ids into a :data:`Known` map and walk the batch through it, event by event, before
linking the chain. Content is compared by :func:`storage.chain.digest_of` (event type,
timestamp, actor and payload; the event_id is the key):

- the same content as ANY stored revision of the event_id: a duplicate (at-least-once
  redelivery), dropped and counted;
- new content under a known event_id: stored as its next revision (``top + 1``), because
  real workers reuse deterministic ids (``bootstrap-{target}-started`` on every run);
- an unknown event_id: revision 1.

Revision numbers are dense per event_id (1, 2, …), and each writer assigns ``top + 1`` of
what it read; the backends' unique key on ``(event_id, revision)`` therefore refuses a
writer whose read was stale (a concurrent writer stored a revision of that id meanwhile),
which is what keeps both revision numbers and ``(event_id, digest)`` unique: a writer that
stored revision ``r`` had seen revisions ``1..r-1`` committed, so it would have dropped
content equal to any of them.

Both planners call :func:`sort_event` for every event of a batch, so the decision is written
once. The hot path is the unknown id: one dict lookup, the bare digest string stored;
:class:`Revisions` only exists for ids stored more than once.
"""

from __future__ import annotations

from collections.abc import Iterable

from storage.base import EntryOutcome
from storage.envelope import Envelope


class Revisions:
    """The digests of an event_id with several revisions (or a revision other than 1)."""

    __slots__ = ("digests", "top")

    def __init__(self, digests: set[str], top: int) -> None:
        self.digests = digests
        self.top = top


Known = dict[str, str | Revisions]
"""event_id → the digest of its only revision (revision 1), or its :class:`Revisions`."""


def known_from(rows: Iterable[tuple[str, str, int]]) -> Known:
    """The :data:`Known` map of stored ``(event_id, digest, revision)`` rows."""
    known: Known = {}
    for event_id, digest, revision in rows:
        stored = known.get(event_id)
        if stored is None:
            known[event_id] = digest if revision == 1 else Revisions({digest}, revision)
        elif isinstance(stored, str):
            known[event_id] = Revisions({stored, digest}, max(1, revision))
        else:
            stored.digests.add(digest)
            stored.top = max(stored.top, revision)
    return known


def revise(known: Known, event_id: str, digest: str) -> int:
    """Revision number of ``digest`` under an event_id already in ``known``; 0 when it is
    a duplicate. Records the new revision, so later copies in the batch compare with it."""
    stored = known[event_id]
    if isinstance(stored, str):
        if stored == digest:
            return 0
        known[event_id] = Revisions({stored, digest}, 2)
        return 2
    if digest in stored.digests:
        return 0
    stored.digests.add(digest)
    stored.top += 1
    return stored.top


def sort_event(known: Known, tally: Tally, entry_id: str, event_id: str, digest: str) -> int:
    """The revision to store this event as (1 for an unknown event_id), or 0 when it is a
    duplicate to drop; counted in ``tally`` and recorded in ``known``, so later copies in
    the batch compare with it."""
    stored = known.get(event_id)
    if stored is None:
        known[event_id] = digest
        return 1
    if stored != digest:  # a str that differs, or the Revisions of an id stored repeatedly
        revision = revise(known, event_id, digest)
        if revision:
            tally.revision(entry_id)
            return revision
    tally.duplicate(entry_id)
    return 0


class Tally:
    """Duplicates and revisions of a batch, in total and per entry_id, counted where they
    occur (the rare branches of :func:`sort_event`); an entry's ``stored`` is what remains
    of its events, so the hot path (a new event_id) counts nothing."""

    __slots__ = ("duplicates", "dups", "revisions", "revs")

    def __init__(self) -> None:
        self.duplicates = 0
        self.revisions = 0
        self.dups: dict[str, int] = {}
        self.revs: dict[str, int] = {}

    def duplicate(self, entry_id: str) -> None:
        self.duplicates += 1
        self.dups[entry_id] = self.dups.get(entry_id, 0) + 1

    def revision(self, entry_id: str) -> None:
        self.revisions += 1
        self.revs[entry_id] = self.revs.get(entry_id, 0) + 1

    def outcomes(self, envelopes: Iterable[Envelope]) -> dict[str, EntryOutcome]:
        """One outcome per entry_id of ``envelopes`` (envelopes sharing one are summed)."""
        sizes: dict[str, int] = {}
        for env in envelopes:
            sizes[env.entry_id] = sizes.get(env.entry_id, 0) + len(env.bundle.events)
        dups, revs = self.dups, self.revs
        return {
            entry_id: EntryOutcome(
                n - dups.get(entry_id, 0) - revs.get(entry_id, 0),
                revs.get(entry_id, 0),
                dups.get(entry_id, 0),
            )
            for entry_id, n in sizes.items()
        }
