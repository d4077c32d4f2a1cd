"""The storage interface both backends implement, and its value types.

The semantics every backend keeps (duplicates, revisions, chain, projection, errors) are
stated in docs/architecture.md, "Storage contract".

Pipeline position: the consumer calls :meth:`EventStore.write_batch` once per batch read
from one partition and acks only after it returned; the ingest tier's query API calls the
read methods. Everything a caller may rely on is stated here; ``tests/storage`` runs the
same conformance suite against every implementation.

Exception tree::

    StorageError                  base of everything a backend raises on purpose
    ├── StorageUnavailable        transient: cannot reach the database/files now (refused,
    │                             reset, timeout, shutting down, serialization failure,
    │                             deadlock, disk full); the same batch is retried later
    ├── StorageDataError          permanent: the batch holds a value the backend refuses;
    │                             the same batch fails again, so the consumer isolates the
    │                             entries responsible and dead-letters only those
    └── StorageCorrupt            on-disk state contradicts itself; needs an operator
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from storage.chain import ChainPoint, Checkpoint
from storage.envelope import Envelope
from storage.projection import Graph
from storage.views import (
    AttemptDetail,
    AttemptSummary,
    ChainStatus,
    EventView,
    FailureView,
    GraphSummary,
    Page,
    TaskDetail,
    TaskSummary,
    TopologySummary,
)


class StorageError(Exception):
    """Base of the errors a backend raises deliberately."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached now (database down, disk full); the batch may be retried."""


class StorageTimeout(StorageUnavailable):
    """The backend cancelled the write after its statement timeout (PostgreSQL 57014).

    Transient at first (a busy server), but a batch that times out every time would stall
    its partition: the consumer retries it a bounded number of times, then isolates it as
    if it were a data error (``LEVIATHAN_CONSUMER_TIMEOUT_RETRIES``)."""


class StorageDataError(StorageError):
    """Data in the batch that this backend refuses; retrying the same batch cannot help."""


class StorageCorrupt(StorageError):
    """Stored state contradicts itself (e.g. an index ahead of its log)."""


def describe(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (driver messages may span several), for error texts."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(slots=True)
class StoredEvent:
    """One row of the event log. ``timestamp``/``received_at`` are normalised strings.

    A value: nothing assigns to it once made. Not ``frozen`` because the write path makes
    one per event and a frozen dataclass's ``__init__`` costs ~7x a plain one (1.2 µs vs
    0.16 µs for these twelve fields).
    """

    event_id: str
    event_type: str
    timestamp: str
    actor_id: str | None
    payload: dict[str, Any]
    bundle_id: str
    target: str
    received_at: str
    partition: int
    seq: int
    prev_hash: str
    hash: str
    # 1 for the first content stored under an event_id, 2, 3, … for each later one
    revision: int = 1
    # content digest (storage.chain.digest_of); "" where a reader did not load it. The
    # projection's versions end with it, so the write and rebuild paths always set it.
    digest: str = ""

    @property
    def task_id(self) -> str | None:
        value = self.payload.get("task_id")
        return value if isinstance(value, str) else None

    @property
    def attempt_id(self) -> str | None:
        value = self.payload.get("attempt_id")
        return value if isinstance(value, str) else None

    def view(self) -> EventView:
        return EventView(
            event_id=self.event_id,
            event_type=self.event_type,
            timestamp=self.timestamp,
            actor_id=self.actor_id,
            payload=self.payload,
            bundle_id=self.bundle_id,
            target=self.target,
            received_at=self.received_at,
            partition=self.partition,
            seq=self.seq,
            prev_hash=self.prev_hash,
            hash=self.hash,
            task_id=self.task_id,
            attempt_id=self.attempt_id,
            revision=self.revision,
        )


@dataclass(frozen=True, slots=True)
class EntryOutcome:
    """What happened to the events of one stream entry (one bundle, or one chunk of one).

    ``stored`` counts events whose ``event_id`` was new, ``revisions`` events stored as a new
    revision of a known ``event_id`` (different content), ``duplicates`` identical
    re-deliveries that were dropped. ``?wait=`` answers with these per bundle.
    """

    stored: int = 0
    revisions: int = 0
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one ``write_batch`` did; counts are of events, not bundles.

    ``written`` counts every event appended to the log, ``revisions`` those of them that
    are a new revision of a known ``event_id`` (so ``written - revisions`` had new ids),
    ``duplicates`` identical re-deliveries dropped. ``outcomes`` maps each envelope's
    ``entry_id`` to its :class:`EntryOutcome` (envelopes sharing an entry_id are summed).
    """

    written: int = 0
    duplicates: int = 0
    revisions: int = 0
    outcomes: dict[str, EntryOutcome] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Retained:
    """What ``retain`` removed from one partition: ``removed`` events, up to ``checkpoint``."""

    partition: int
    removed: int
    checkpoint: Checkpoint | None


@dataclass(frozen=True, slots=True)
class LogStat:
    """The retained log of one partition, for the metrics: events still stored, bytes
    on disk (``None`` where the backend cannot tell per partition), and when the oldest
    retained event arrived (epoch seconds; ``None`` when none is stored)."""

    partition: int
    events: int
    bytes: int | None
    oldest_received_at: float | None


@runtime_checkable
class EventStore(Protocol):
    """An append-only, hash-chained event log plus the projected graph."""

    async def open(self) -> None:
        """Create/migrate on-disk state and recover chain heads; idempotent."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise :class:`StorageUnavailable` if the backend cannot serve now."""

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        """Append the events of ``envelopes`` (all read from ``partition``) atomically.

        In order: dedup by ``event_id`` and content digest (the same content as any stored
        revision of that id → dropped and counted; new content under a known id → stored
        as its next revision), link the new events into the partition's chain, store
        bundle artifacts, merge :func:`storage.projection.fold` of the new events into the
        graph. Either all of it is durable when this returns, or none of it is and it
        raises: :class:`StorageUnavailable` for anything transient (retry the batch),
        :class:`StorageDataError` for data the backend refuses (isolate the entry). Safe to
        call again with the same envelopes (at-least-once delivery).
        """

    # -- read side (query API) ------------------------------------------------------
    async def graph_summary(self, recent: int = 20) -> GraphSummary: ...

    async def list_attempts(
        self,
        *,
        target: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[AttemptSummary]:
        """Newest first by when the store first saw the attempt (an insertion number that
        never changes, so pages neither skip nor repeat an attempt while writers update
        it); opaque cursor."""

    async def get_attempt(self, attempt_id: str) -> AttemptDetail | None: ...

    async def list_failures(
        self, *, target: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[FailureView]:
        """``attempt.failed`` and ``task.failed`` events, newest stored first; opaque
        cursor (an event's insertion number, which never changes)."""

    async def recent_events(self, limit: int = 50) -> list[EventView]:
        """Newest stored first (insertion order, not client timestamps)."""

    async def list_events(
        self,
        *,
        after: str | None = None,
        limit: int = 100,
        task_id: str | None = None,
        attempt_id: str | None = None,
        event_type: str | None = None,
        target: str | None = None,
    ) -> Page[EventView]:
        """Every stored event (and revision) once, resuming after the opaque ``after``.

        The cursor follows commit order: a client paging at any moment during any load
        sees every event exactly once. Each partition's events come in chain (seq)
        order; partitions are merged by insertion number. ``next_cursor`` is the cursor
        after the page's last event while more events follow, None once the log is read
        (so a loop until None ends). ``position`` is never None: after the page's last
        event, also on the last page, or ``after`` itself on an empty page (a cursor at
        the start when ``after`` was None); it is what ``GET /v1/events`` answers as
        ``next_cursor`` at the end, so a caught-up client polls from where it stopped.
        Cursors issued by earlier versions keep working."""

    async def list_tasks(
        self,
        *,
        target: str | None = None,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[TaskSummary]:
        """Newest first by when the store first saw the task; opaque cursor."""

    async def get_task(self, task_id: str) -> TaskDetail | None: ...

    async def attempt_exists(self, attempt_id: str) -> bool: ...

    async def topology_summary(self, target: str) -> TopologySummary | None:
        """The newest ``topo.indexed`` of ``target`` and its item counts; None if none.

        Served from the topology index (:mod:`storage.topology`), never a log scan.
        """

    async def topology_items(
        self, target: str, kind: str, *, limit: int = 1000, cursor: str | None = None
    ) -> Page[dict[str, Any]]:
        """Newest payload of each ``kind`` item of ``target``, by item key; opaque cursor."""

    async def verify_chain(self, partition: int, after: ChainPoint | None = None) -> ChainStatus:
        """Walk ``partition``'s chain; with ``after`` (a prefix verified earlier) only the
        events past it, after checking the stored event at ``after.seq`` still has
        ``after.hash``. ``checked`` counts the prefix too."""

    async def partitions(self) -> list[int]:
        """Partitions that have at least one stored event."""

    async def retain(self, before: float, *, batch: int = 5000) -> list[Retained]:
        """Remove, per partition, the longest prefix of the chain whose events all arrived
        (``received_at``) before the epoch ``before``, in batches of at most ``batch``
        events so writers wait at most one batch; each batch moves the partition's
        :class:`storage.chain.Checkpoint` to the last removed event. The graph and the
        topology index keep their state. ``verify_chain`` starts at the checkpoint."""

    async def checkpoints(self) -> dict[int, Checkpoint]:
        """The retention checkpoint of each partition that has one."""

    async def log_stats(self) -> list[LogStat]:
        """Size and oldest retained event of each partition's log (for the metrics)."""

    def iter_events(self, partition: int | None = None) -> AsyncIterator[StoredEvent]:
        """Every stored event (one partition in seq order, or all in insertion order).

        Implementations are async generators (``async def`` with ``yield``), hence a plain
        ``def`` here: an ``async def`` without ``yield`` would type as a coroutine.
        """

    async def graph(self) -> Graph:
        """The whole stored graph (for rebuild checks and tests; not for hot paths)."""

    async def rebuild_graph(self) -> int:
        """Recompute the graph from the event log; returns the number of events folded."""

    async def count_events(self) -> int: ...
