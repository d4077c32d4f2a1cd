"""Write path of the PostgreSQL backend: dedup, chain, COPY insert, graph merge, artifacts.

Pipeline position: :meth:`storage.postgres.store.PostgresStore.write_batch` runs
:func:`write_batch` inside ONE transaction per consumer batch. The chain of a partition is
serialised by a transaction-scoped advisory lock keyed on the partition (writers of other
partitions proceed in parallel). Duplicates and revisions are decided in Python against
the stored digests (:mod:`storage.revisions`; read only when the batch is written
checked: a first attempt treats every event as a new revision 1 and lets the unique index
on ``(event_id, revision)`` refuse it), then the new rows are COPYed straight into
``events``, streamed chunk by chunk as they are linked (:mod:`storage.postgres.copy`; see
docs/design-notes.md, "PostgreSQL write path"). If a writer of another partition stored a
revision of one of our event_ids meanwhile, that index fails the COPY: :class:`RaceLost`
rolls the transaction back and the caller retries, checked.
The ``payload`` column (json, migration 0002) holds the exact bytes the chain hashed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import orjson

from storage.base import BatchResult, StoredEvent
from storage.chain import GENESIS_HASH, digest_of, link_of
from storage.envelope import Envelope
from storage.postgres.copy import encode_rows
from storage.postgres.graph import merge_graph
from storage.postgres.topology import upsert_topology
from storage.projection import PROJECTED_TYPES, Graph, fold
from storage.revisions import Known, Tally, known_from, sort_event
from storage.schema import WireEvent, artifact_id_of, bundle_attempt, format_timestamp

T = TypeVar("T")

# Class id of the two-key advisory locks ("LVTW"); the second key is the partition.
WRITE_LOCK_CLASS = 0x4C565457

# Class id of the per-event_id locks ("LVTI") a batch takes after losing a revision race;
# taken in key order (after the partition lock), so two writers never wait on each other
# in a cycle.
ID_LOCK_CLASS = 0x4C565449
LOCK_IDS = """
SELECT pg_advisory_xact_lock($1, k)
FROM (SELECT DISTINCT hashtext(id) AS k FROM unnest($2::text[]) AS id ORDER BY 1) AS keys
"""

# The columns of events that the COPY writes, in row order (gid comes from its sequence).
COPY_COLUMNS = [
    "partition", "seq", "event_id", "event_type", "ts", "ts_text", "actor_id", "payload",
    "bundle_id", "target", "received_at", "prev_hash", "hash", "digest", "task_id",
    "attempt_id", "revision",
]  # fmt: skip

# Events per streamed COPY chunk: small enough that the server starts inserting early,
# large enough that the per-chunk costs (a CopyData message, a generator step) vanish.
CHUNK_EVENTS = 32


class RaceLost(Exception):
    """A revision of an event_id of the batch was stored already: unchecked, or by a
    concurrent writer."""


@dataclass(slots=True)
class Plan:
    """New rows, plus the new events the graph fold reads (projected types only)."""

    projected: list[StoredEvent] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)


# (envelope, event, timestamp text, payload bytes, payload fragment, digest, received_at)
Item = tuple[Envelope, WireEvent, str, bytes, orjson.Fragment, str, str]


def prepare(envelopes: Sequence[Envelope]) -> list[Item]:
    """What does not depend on the chain position: done while the head query runs.

    Each payload is serialised once (at decode, else here); the chain link, the digest and
    the stored ``payload`` column all use those bytes, so verify re-reads exactly what was
    hashed.
    """
    items: list[Item] = []
    append, fragment = items.append, orjson.Fragment
    for env in envelopes:
        received = format_timestamp(_epoch(env.received_at))
        timestamps, payloads = env.texts()
        for ev, ts_text, pbytes in zip(env.bundle.events, timestamps, payloads, strict=True):
            frag = fragment(pbytes)
            digest = digest_of(ev.event_type, ts_text, ev.actor_id, frag)
            append((env, ev, ts_text, pbytes, frag, digest, received))
    return items


class Planner:
    """Sort out duplicates and revisions against ``known`` and link new events, chunk by
    chunk (each chunk holds whole envelopes)."""

    def __init__(self, partition: int, known: Known, seq: int, prev: str) -> None:
        self.partition, self.known, self.seq, self.prev = partition, known, seq, prev
        self.out = Plan()

    def run(self, items: Sequence[Item]) -> list[tuple[Any, ...]]:
        """Rows of the new events among ``items`` (also appended to ``self.out``)."""
        out, known, partition = self.out, self.known, self.partition
        seq, prev = self.seq, self.prev
        rows: list[tuple[Any, ...]] = []
        projected, tally = out.projected, out.tally
        for env, ev, ts_text, pbytes, frag, digest, received in items:
            event_id = ev.event_id
            revision = sort_event(known, tally, env.entry_id, event_id, digest)
            if not revision:
                continue  # a duplicate
            bundle = env.bundle
            seq += 1
            event_type, actor_id, payload = ev.event_type, ev.actor_id, ev.payload
            hash_ = link_of(event_id, event_type, ts_text, actor_id, frag, prev)
            if event_type in PROJECTED_TYPES:  # the fold skips the others: build no object
                projected.append(
                    StoredEvent(
                        event_id, event_type, ts_text, actor_id, payload, bundle.bundle_id,
                        bundle.target, received, partition, seq, prev, hash_, revision, digest,
                    )
                )  # fmt: skip
            task_id, attempt_id = payload.get("task_id"), payload.get("attempt_id")
            rows.append(
                (partition, seq, event_id, event_type, ev.timestamp, ts_text, actor_id, pbytes,
                 bundle.bundle_id, bundle.target, received, prev, hash_, digest,
                 task_id if type(task_id) is str else None,
                 attempt_id if type(attempt_id) is str else None, revision)
            )  # fmt: skip
            prev = hash_
        self.seq, self.prev = seq, prev
        out.rows.extend(rows)
        return rows


def _epoch(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


# One round trip for the chain head and the stored revisions of the batch's event_ids
# (an aggregate always yields one row; the LEFT JOIN keeps it when the head is missing).
HEAD_AND_DIGESTS = """
SELECT h.seq, h.hash, k.ids, k.digests, k.revisions
FROM (SELECT array_agg(event_id) AS ids, array_agg(digest) AS digests,
             array_agg(revision) AS revisions
      FROM events WHERE event_id = ANY($2::text[])) AS k
LEFT JOIN heads h ON h.partition = $1
"""


async def _head_and_digests(
    con: asyncpg.Connection, partition: int, envelopes: Sequence[Envelope], check: bool
) -> tuple[int, str, Known]:
    ids = (
        list(dict.fromkeys(ev.event_id for env in envelopes for ev in env.bundle.events))
        if check
        else []
    )
    row = await con.fetchrow(HEAD_AND_DIGESTS, partition, ids)
    assert row is not None  # an aggregate query always returns its one row
    known = known_from(
        zip(row["ids"] or (), row["digests"] or (), row["revisions"] or (), strict=True)
    )
    if row["seq"] is None:
        return 0, GENESIS_HASH, known
    return int(row["seq"]), str(row["hash"]), known


async def _copy(con: asyncpg.Connection, chunks: AsyncIterator[bytes]) -> None:
    # COPY straight into events: the unique index on (event_id, revision) waits for a
    # concurrent writer of the same id and revision and then fails the COPY, which rolls
    # the whole batch back to be retried (no staging table, so each row is written once).
    try:
        await con.copy_to_table("events", source=chunks, columns=COPY_COLUMNS)
    except asyncpg.UniqueViolationError as exc:
        raise RaceLost from exc


def _groups(envelopes: Sequence[Envelope]) -> list[Sequence[Envelope]]:
    """The batch cut into runs of whole bundles of about :data:`CHUNK_EVENTS` events."""
    groups: list[Sequence[Envelope]] = []
    start = size = 0
    for i, env in enumerate(envelopes):
        size += len(env.bundle.events)
        if size >= CHUNK_EVENTS:
            groups.append(envelopes[start : i + 1])
            start, size = i + 1, 0
    if start < len(envelopes):
        groups.append(envelopes[start:])
    return groups


async def _started(job: Awaitable[T]) -> asyncio.Future[T]:
    """Schedule ``job`` and let it send its request before the caller computes on."""
    future = asyncio.ensure_future(job)
    await asyncio.sleep(0)
    return future


async def store_artifacts(con: asyncpg.Connection, envelopes: Sequence[Envelope]) -> None:
    rows = []
    for env in envelopes:
        attempt = bundle_attempt(env.bundle)
        for art in env.bundle.artifacts or []:
            rows.append(
                (env.bundle.bundle_id, attempt, artifact_id_of(art.model_extra, art.sha256),
                 art.sha256, art.kind, art.uri, art.size)
            )  # fmt: skip
    if rows:
        await con.executemany(
            "INSERT INTO artifacts(bundle_id, attempt_id, artifact_id, sha256, kind, uri, size) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            rows,
        )


async def write_batch(
    con: asyncpg.Connection,
    partition: int,
    envelopes: Sequence[Envelope],
    *,
    check: bool = True,
    lock_ids: bool = False,
) -> BatchResult:
    """The whole batch; the caller holds the transaction and retries on :class:`RaceLost`.

    ``check=False`` skips reading the stored digests of the batch's event_ids (one index
    probe per event) and treats every event as new: right for the usual batch, and if one
    was stored after all, the unique index fails the COPY (:class:`RaceLost`) and the
    caller writes the batch again with ``check=True``, which sorts out duplicates and
    revisions. ``lock_ids`` (after a checked attempt lost a race) first takes a
    transaction lock per event_id, so writers of other partitions revising the same ids
    take turns instead of refusing each other round after round.

    Round trips: lock, head+digests, one streamed COPY, one graph statement (three when
    the batch touches nodes that existed; artifacts add one). The Python work overlaps the
    server's: the first chunks are digested while the head query runs, each next chunk is
    linked and encoded while the server inserts the previous one (:mod:`storage.postgres.copy`),
    and the graph delta is folded while it inserts the last.
    """
    await con.execute("SELECT pg_advisory_xact_lock($1, $2)", WRITE_LOCK_CLASS, partition)
    if lock_ids:
        ids = list({ev.event_id for env in envelopes for ev in env.bundle.events})
        await con.execute(LOCK_IDS, ID_LOCK_CLASS, ids)
    lookup = await _started(_head_and_digests(con, partition, envelopes, check))
    groups = _groups(envelopes)
    ready: list[list[Item]] = []  # groups digested while the head query ran
    try:
        for group in groups:
            ready.append(prepare(group))
            await asyncio.sleep(0)  # lets the head query's answer in
            if lookup.done():
                break
        seq, prev, known = await lookup
    except BaseException:
        if not lookup.done():
            lookup.cancel()  # the transaction rolls back; do not leave the task behind
            await asyncio.gather(lookup, return_exceptions=True)
        raise
    planner = Planner(partition, known, seq, prev)
    folded: list[Graph] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i, group in enumerate(groups):
            rows = planner.run(ready[i] if i < len(ready) else prepare(group))
            if rows:
                yield encode_rows(rows)  # asyncpg sends it before asking for the next
        folded.append(fold(planner.out.projected))

    await _copy(con, chunks())
    out = planner.out
    if out.rows:
        last = out.rows[-1]  # (partition, seq, ..., prev, hash, ...)
        await merge_graph(con, partition, folded[0], head=(last[1], last[12]))
    await store_artifacts(con, envelopes)
    await upsert_topology(con, envelopes)
    return _result(out, envelopes)


def _result(out: Plan, envelopes: Sequence[Envelope]) -> BatchResult:
    outcomes = out.tally.outcomes(envelopes)
    return BatchResult(len(out.rows), out.tally.duplicates, out.tally.revisions, outcomes)
