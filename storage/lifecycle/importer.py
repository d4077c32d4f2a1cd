"""Write imported events through :meth:`EventStore.write_batch`, as the consumer does.

Pipeline position: the sink of ``leviathan-cp import``. Each source (our own export, the
original's journal or its PostgreSQL table) yields :class:`Incoming` records in the order
they were stored; this module validates each one with the wire models (the checks ingest
makes), groups consecutive events of one bundle into envelopes, and writes one batch per
partition whenever a partition's buffer is full. Storing goes through the same
``write_batch`` live traffic takes, so a second run finds every event a duplicate, and new
content under a known ``event_id`` becomes its next revision.

Order matters for revisions: an ``event_id`` buffered for one partition is flushed before
a later revision of it is buffered for another, so revision numbers follow the source's
order. Memory is bounded by the buffers (``batch_events`` per partition).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from storage.base import EventStore, StorageDataError, StorageUnavailable, describe
from storage.envelope import Envelope
from storage.queue import StreamLayout
from storage.schema import Bundle, WireEvent

TOKEN_LABEL = "import"
RETRIES = 5


@dataclass(slots=True)
class Incoming:
    """One event to import: its wire fields plus where and when it was received."""

    line: int
    event: dict[str, Any]
    target: str
    bundle_id: str
    received_at: float
    partition: int | None = None  # the partition it had (our export); None: route by bundle


@dataclass(slots=True)
class ImportReport:
    """Counts of one import; ``rejected`` holds ``(line, reason)`` per line not imported."""

    lines: int = 0
    stored: int = 0
    revisions: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    ids: int = 0  # distinct event ids in the source (the source reader counts them)

    def reject(self, line: int, reason: str) -> None:
        self.rejected.append((line, reason))

    def summary(self) -> str:
        return (
            f"{self.lines} lines, {self.ids} event ids: {self.stored} stored, "
            f"{self.revisions} revisions, {self.duplicates} duplicates, "
            f"{len(self.rejected)} rejected"
        )


@dataclass(slots=True)
class _Pending:
    bundle_id: str
    target: str
    received_at: float
    events: list[WireEvent]
    lines: list[int]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"][2:] or err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


class Importer:
    """Buffers :class:`Incoming` events per partition and writes them in batches."""

    def __init__(
        self,
        store: EventStore,
        layout: StreamLayout,
        *,
        batch_events: int = 2000,
        progress: Callable[[ImportReport], None] | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.batch_events = batch_events
        self.progress = progress
        self.report = ImportReport()
        self._buffers: dict[int, list[_Pending]] = {}
        self._sizes: dict[int, int] = {}
        self._where: dict[str, int] = {}  # event_id → partition buffering it
        self._entries = 0

    async def add(self, item: Incoming) -> None:
        self.report.lines += 1
        try:
            bundle = Bundle.model_validate(
                {"target": item.target, "bundle_id": item.bundle_id, "events": [item.event]}
            )
        except ValidationError as exc:
            self.report.reject(item.line, _first_error(exc))
            return
        event = bundle.events[0]
        partition = item.partition
        if partition is None or not 0 <= partition < self.layout.partitions:
            partition = self.layout.partition_of(item.bundle_id)
        elsewhere = self._where.get(event.event_id)
        if elsewhere is not None and elsewhere != partition:
            await self._flush(elsewhere)  # the earlier revision first
        self._where[event.event_id] = partition
        pending = self._buffers.setdefault(partition, [])
        last = pending[-1] if pending else None
        if (
            last is not None
            and last.bundle_id == item.bundle_id
            and last.target == item.target
            and last.received_at == item.received_at
        ):
            last.events.append(event)
            last.lines.append(item.line)
        else:
            pending.append(
                _Pending(item.bundle_id, item.target, item.received_at, [event], [item.line])
            )
        self._sizes[partition] = self._sizes.get(partition, 0) + 1
        if self._sizes[partition] >= self.batch_events:
            await self._flush(partition)

    def bad_line(self, line: int, reason: str) -> None:
        """A source line that is not an event at all (not JSON, no object)."""
        self.report.lines += 1
        self.report.reject(line, reason)

    async def finish(self) -> ImportReport:
        for partition in sorted(self._buffers):
            await self._flush(partition)
        return self.report

    def _envelope(self, item: _Pending, events: list[WireEvent]) -> Envelope:
        self._entries += 1
        bundle = Bundle.model_construct(
            target=item.target, bundle_id=item.bundle_id, events=events, artifacts=None
        )
        return Envelope(
            bundle=bundle,
            received_at=item.received_at,
            token_label=TOKEN_LABEL,
            entry_id=f"import-{self._entries}",
        )

    async def _flush(self, partition: int) -> None:
        pending = self._buffers.pop(partition, [])
        self._sizes.pop(partition, None)
        for item in pending:
            for ev in item.events:
                if self._where.get(ev.event_id) == partition:
                    del self._where[ev.event_id]
        if not pending:
            return
        try:
            await self._write(partition, [self._envelope(p, p.events) for p in pending])
        except StorageDataError:
            # one value the backend refuses: write event by event, report the ones refused
            for item in pending:
                for ev, line in zip(item.events, item.lines, strict=True):
                    try:
                        await self._write(partition, [self._envelope(item, [ev])])
                    except StorageDataError as exc:
                        self.report.reject(line, describe(exc))
        if self.progress is not None:
            self.progress(self.report)

    async def _write(self, partition: int, envelopes: list[Envelope]) -> None:
        delay = 0.5
        for attempt in range(RETRIES):
            try:
                result = await self.store.write_batch(partition, envelopes)
                break
            except StorageUnavailable:
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        self.report.stored += result.written - result.revisions
        self.report.revisions += result.revisions
        self.report.duplicates += result.duplicates
