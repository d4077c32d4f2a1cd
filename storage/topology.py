"""Topology index: the latest payload of every item the topology worker discovered.

Pipeline position: both backends' write paths call :func:`rows_of_envelopes` on each
batch and upsert the rows in the batch's transaction (NDJSON: :mod:`storage.ndjson.index`,
PostgreSQL: :mod:`storage.postgres.topology`), so ``GET /v1/topology/*`` reads a small table
keyed by target instead of scanning the event log. Pure: no I/O here.

The worker posts ``topo.indexed`` (one per run: the summary), ``topo.area.discovered``,
``topo.subsystem.discovered`` and ``topo.dependency.discovered`` (one per item), each with
``payload.target_id``. An item is keyed by ``(target, kind, item)``:

- summary: ``item = ""`` (one per target);
- area / subsystem: ``payload.area_id`` / ``payload.subsystem_id``;
- dependency: ``"{from_subsystem_id} -> {to_subsystem_id}"``;
- an event without its id (or with one over :data:`MAX_ITEM` characters, or whose item
  is over :data:`MAX_ITEM_BYTES` in UTF-8) gets ``"event:{event_id}"``.

Why a bound in bytes: PostgreSQL's btree refuses an index row over 2704 bytes, and the
primary key ``(target, kind, item)`` holds a target of up to 255 characters (1,020 bytes
in UTF-8) beside the item. An item of 600 four-byte characters (2,400 bytes) made that
row 3,448 bytes: PostgreSQL refused the whole batch while SQLite stored it. With the item
at most :data:`MAX_ITEM_BYTES` every key fits on both backends, and reads stay
primary-key lookups and range scans in item order (a hashed key would lose the order).

Why it is order-independent: per key the row with the greatest version
``(timestamp with fixed microseconds, event_id, content digest)`` wins, a total order, so
any permutation of a set of events (duplicates and revisions included) leaves the same
rows. The digest (:func:`storage.chain.digest_of`, the one the event log stores) only
decides between revisions of one event_id that kept their timestamp.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orjson import Fragment

from storage.chain import digest_of, payload_json
from storage.envelope import Envelope
from storage.projection import version_text
from storage.schema import MAX_ID_LENGTH, format_timestamp

SUMMARY, AREA, SUBSYSTEM, DEPENDENCY = "summary", "area", "subsystem", "dependency"
KIND_OF = {
    "topo.indexed": SUMMARY,
    "topo.area.discovered": AREA,
    "topo.subsystem.discovered": SUBSYSTEM,
    "topo.dependency.discovered": DEPENDENCY,
}
TOPOLOGY_TYPES = frozenset(KIND_OF)
"""Event types the topology index reads; every other event leaves it unchanged."""

ID_FIELD = {AREA: "area_id", SUBSYSTEM: "subsystem_id"}
MAX_ITEM = 600  # characters
MAX_ITEM_BYTES = 1536
"""An item's UTF-8 bytes at most: with the target's 1,020 and the row's overhead the
key stays under PostgreSQL's 2,704-byte btree row (migration 0006 re-keys older rows)."""

Version = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class TopoRow:
    """One index row: the winning event of one ``(target, kind, item)``."""

    target: str
    kind: str
    item: str
    version_ts: str
    event_id: str
    digest: str
    payload: Mapping[str, Any]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.target, self.kind, self.item)

    @property
    def version(self) -> Version:
        return (self.version_ts, self.event_id, self.digest)


def _text(value: Any, limit: int) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def fits(item: str) -> bool:
    """Whether ``item`` is at most :data:`MAX_ITEM_BYTES` in UTF-8 (ASCII is not encoded)."""
    if len(item) * 4 <= MAX_ITEM_BYTES or (len(item) <= MAX_ITEM_BYTES and item.isascii()):
        return True
    return len(item.encode("utf-8", "surrogatepass")) <= MAX_ITEM_BYTES


def item_of(kind: str, payload: Mapping[str, Any], event_id: str) -> str:
    """The item key of a topology event (see the module docstring)."""
    if kind == SUMMARY:
        return ""
    if kind == DEPENDENCY:
        src = _text(payload.get("from_subsystem_id"), MAX_ID_LENGTH)
        dst = _text(payload.get("to_subsystem_id"), MAX_ID_LENGTH)
        if src is not None and dst is not None:
            item = f"{src} -> {dst}"
            if fits(item):
                return item
    else:
        found = _text(payload.get(ID_FIELD[kind]), MAX_ITEM)
        if found is not None and fits(found):
            return found
    return f"event:{event_id}"


def target_of(payload: Mapping[str, Any], bundle_target: str) -> str:
    """``payload.target_id`` when it is a usable id, else the bundle's target."""
    return _text(payload.get("target_id"), MAX_ID_LENGTH) or bundle_target


def row_of(
    event_type: str,
    event_id: str,
    timestamp: str | datetime,
    actor_id: str | None,
    payload: Mapping[str, Any],
    bundle_target: str,
) -> TopoRow | None:
    """The index row an event asserts, or None for an event of another type."""
    kind = KIND_OF.get(event_type)
    if kind is None:
        return None
    ts_text = timestamp if isinstance(timestamp, str) else format_timestamp(timestamp)
    digest = digest_of(event_type, ts_text, actor_id, Fragment(payload_json(payload)))
    return TopoRow(
        target=target_of(payload, bundle_target),
        kind=kind,
        item=item_of(kind, payload, event_id),
        version_ts=version_text(ts_text),
        event_id=event_id,
        digest=digest,
        payload=payload,
    )


def latest(rows: Iterable[TopoRow]) -> list[TopoRow]:
    """One row per key, the greatest version (what the stored index keeps too)."""
    best: dict[tuple[str, str, str], TopoRow] = {}
    for row in rows:
        held = best.get(row.key)
        if held is None or row.version > held.version:
            best[row.key] = row
    return list(best.values())


def rows_of_envelopes(envelopes: Sequence[Envelope]) -> list[TopoRow]:
    """The rows of a consumer batch: its topology events, latest per key.

    Every event of the batch is offered, duplicates included: a duplicate asserts the row
    it asserted before, so the upsert leaves the index unchanged. Costs one set lookup per
    event of another type.
    """
    rows = []
    for env in envelopes:
        target = env.bundle.target
        for ev in env.bundle.events:
            if ev.event_type in TOPOLOGY_TYPES:
                row = row_of(
                    ev.event_type, ev.event_id, ev.timestamp, ev.actor_id, ev.payload, target
                )
                if row is not None:
                    rows.append(row)
    return latest(rows)


def rows_of_events(events: Iterable[Any]) -> list[TopoRow]:
    """The rows of stored events (:class:`storage.base.StoredEvent`), latest per key."""
    rows = []
    for ev in events:
        if ev.event_type in TOPOLOGY_TYPES:
            row = row_of(
                ev.event_type, ev.event_id, ev.timestamp, ev.actor_id, ev.payload, ev.target
            )
            if row is not None:
                rows.append(row)
    return latest(rows)
